package monitoring

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/testenv"
)

func TestRulesCheck(t *testing.T) {
	runPromtool(t, Dir(), "check", "rules", RulesFile)
}

func TestRulesUnitTests(t *testing.T) {
	out := runPromtool(t, Dir(), "test", "rules", RuleTestsFile)
	// promtool only warns when a rule file is missing, and every alert is then "absent".
	if strings.Contains(out, "WARNING") {
		t.Errorf("promtool test rules warned:\n%s", out)
	}
}

// runbookBase is where the alerts' runbook_url point, each at the alert's own section.
const runbookBase = "https://github.com/roomsync/roomsync/blob/main/docs/runbooks.md#"

var alertName = regexp.MustCompile(`^RoomSync[A-Z][A-Za-z0-9]*$`)

// TestRulesConventions holds the rules to the monitoring-mixins conventions the README
// promises: names, severities, annotations, and a runbook section for every alert.
func TestRulesConventions(t *testing.T) {
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	anchors := runbookAnchors(t)
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if !alertName.MatchString(r.Alert) {
			t.Errorf("alert %q: want CamelCase starting RoomSync", r.Alert)
		}
		if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
			t.Errorf("%s: for %q: want a positive duration", r.Alert, r.For)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, key := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[key] == "" {
				t.Errorf("%s: no %s annotation", r.Alert, key)
			}
		}
		if d := r.Annotations["description"]; !strings.Contains(d, "{{ $labels.") && !strings.Contains(d, "{{ $value") {
			t.Errorf("%s: description %q says nothing of the series that fired", r.Alert, d)
		}
		anchor := strings.ToLower(r.Alert)
		if got := r.Annotations["runbook_url"]; got != runbookBase+anchor {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, runbookBase+anchor)
		}
		if !anchors[anchor] {
			t.Errorf("%s: docs/runbooks.md has no section %q", r.Alert, anchor)
		}
	}
}

// runbookAnchors lists the anchors GitHub gives the headings of docs/runbooks.md.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	strip := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchors[strings.ReplaceAll(strip.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")] = true
	}
	return anchors
}

// ruleTests is the part of a promtool test file this package checks.
type ruleTests struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name        string `json:"name"`
		Interval    string `json:"interval"`
		InputSeries []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestRulesEveryAlertTested: for every alert, one test case shows it silent and later firing
// (before and after its for:), checking its severity and every annotation.
func TestRulesEveryAlertTested(t *testing.T) {
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	var f ruleTests
	if err := readYAML(filepath.Join(Dir(), RuleTestsFile), &f); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.RuleFiles, []string{RulesFile}) {
		t.Errorf("rule_files %q, want [%s]", f.RuleFiles, RulesFile)
	}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		tested := false
		for _, tc := range f.Tests {
			var silent, firing []time.Duration
			for _, at := range tc.AlertRuleTest {
				if at.Alertname != r.Alert {
					continue
				}
				when, err := time.ParseDuration(at.EvalTime)
				if err != nil {
					t.Fatalf("%s: eval_time %q: %v", tc.Name, at.EvalTime, err)
				}
				if len(at.ExpAlerts) == 0 {
					silent = append(silent, when)
					continue
				}
				firing = append(firing, when)
				for _, exp := range at.ExpAlerts {
					if exp.ExpLabels["severity"] != r.Labels["severity"] {
						t.Errorf("%s at %s: exp_labels lack severity %s", tc.Name, at.EvalTime, r.Labels["severity"])
					}
					for key := range r.Annotations {
						if _, ok := exp.ExpAnnotations[key]; !ok {
							t.Errorf("%s at %s: exp_annotations lack %s", tc.Name, at.EvalTime, key)
						}
					}
				}
			}
			if len(silent) > 0 && len(firing) > 0 && slices.Min(silent) < slices.Min(firing) {
				tested = true
			}
		}
		if !tested {
			t.Errorf("%s: no test case shows it silent and then firing", r.Alert)
		}
	}
}
