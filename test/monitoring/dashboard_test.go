package monitoring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// datasourceVar is how every query names its data source: the dashboard's variable, so the
// dashboard works with whatever Prometheus a Grafana calls its own.
const datasourceVar = "${datasource}"

func TestDashboard(t *testing.T) {
	d, err := LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	// A fixed uid keeps links and bookmarks valid across installs and upgrades.
	if d.UID != "roomsync-overview" {
		t.Errorf("uid %q, want roomsync-overview", d.UID)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current one (36 or later)", d.SchemaVersion)
	}
	vars := map[string]Variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("datasource variable %+v: want type datasource, query prometheus", v)
	}
	for _, name := range []string{"namespace", "name"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" || v.Datasource == nil || v.Datasource.UID != datasourceVar {
			t.Errorf("variable %s %+v: want a query on %s", name, v, datasourceVar)
		}
	}

	ids := map[int]string{}
	for _, p := range d.AllPanels() {
		if prev, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceVar {
			t.Errorf("panel %q: datasource %+v, want %s", p.Title, p.Datasource, datasourceVar)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != datasourceVar || tg.Datasource.Type != "prometheus" {
				t.Errorf("panel %q target %s: datasource %+v, want prometheus %s", p.Title, tg.RefID, tg.Datasource, datasourceVar)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: no expr", p.Title, tg.RefID)
			}
		}
	}
}

// TestDashboardQueriesParse has promtool parse every dashboard query, its Grafana variables
// replaced, as the expression of a recording rule.
func TestDashboardQueriesParse(t *testing.T) {
	d, err := LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	queries, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: WithoutVariables(q)})
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-queries.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard-queries.yaml")
}
