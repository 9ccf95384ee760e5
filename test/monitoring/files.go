package monitoring

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/roomsync/roomsync/internal/testenv"
)

// The files in Dir.
const (
	RulesFile     = "prometheus-rules.yaml"
	RuleTestsFile = "prometheus-rules.test.yaml"
	DashboardFile = "dashboard.json"
)

// Dir is charts/roomsync/files, found from the source tree rather than the working
// directory, so tests of any package can read the files.
func Dir() string { return filepath.Join(testenv.RepoRoot(), "charts", "roomsync", "files") }

// Rule is one alerting or recording rule of the rule file.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []Rule `json:"rules"`
	} `json:"groups"`
}

// Rules reads the rules of every group of the rule file.
func Rules() ([]Rule, error) {
	var f ruleFile
	if err := readYAML(filepath.Join(Dir(), RulesFile), &f); err != nil {
		return nil, err
	}
	var rules []Rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%s holds no rules", RulesFile)
	}
	return rules, nil
}

func readYAML(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// Strict: a misspelt key (exp_annotation, say) is an error, not a check silently skipped.
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}
