package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// Dashboard is the part of a Grafana dashboard the tests look at; the rest of the JSON is
// Grafana's and left alone.
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; a collapsed row holds its panels inside it.
type Panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *DatasourceRef `json:"datasource,omitempty"`
	Targets    []Target       `json:"targets,omitempty"`
	Panels     []Panel        `json:"panels,omitempty"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *DatasourceRef `json:"datasource,omitempty"`
}

// DatasourceRef names a data source; "${datasource}" is the dashboard's variable.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a template variable. Query is a string for the variables this dashboard uses
// (newer Grafana may save an object: it is kept raw).
type Variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition,omitempty"`
	Datasource *DatasourceRef  `json:"datasource,omitempty"`
}

// LoadDashboard decodes the dashboard file.
func LoadDashboard() (*Dashboard, error) {
	raw, err := os.ReadFile(filepath.Join(Dir(), DashboardFile))
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", DashboardFile, err)
	}
	return &d, nil
}

// AllPanels lists every panel, those inside collapsed rows included, rows themselves too.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// labelValues is Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// Queries lists the PromQL of every panel target and of every query variable (the selector of
// a label_values query), each as written, with Grafana's variables still in.
func (d *Dashboard) Queries() ([]string, error) {
	var out []string
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			out = append(out, t.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			return nil, fmt.Errorf("variable %s: query is not a string: %w", v.Name, err)
		}
		if m := labelValues.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		out = append(out, q)
	}
	return out, nil
}

// grafanaVariables matches $name, ${name} and ${name:format}; ranges are the only place the
// dashboard puts $__rate_interval.
var grafanaVariables = regexp.MustCompile(`\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)`)

// WithoutVariables makes a dashboard query plain PromQL: $__rate_interval (and any other
// interval variable) becomes 5m, every other variable a regular expression matching all.
func WithoutVariables(q string) string {
	return grafanaVariables.ReplaceAllStringFunc(q, func(v string) string {
		switch v {
		case "$__rate_interval", "$__interval", "$__range", "${__rate_interval}", "${__interval}", "${__range}":
			return "5m"
		}
		return ".*"
	})
}
