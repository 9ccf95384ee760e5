package federation

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCheckJSONDepth(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, c := range []struct {
		name string
		doc  string
		ok   bool
	}{
		{"flat", `{"a":1}`, true},
		{"at the limit", deep(MaxJSONDepth), true},
		{"past the limit", deep(MaxJSONDepth + 1), false},
		{"objects and arrays mixed", strings.Repeat(`{"a":[`, MaxJSONDepth/2+1), false},
		{"brackets inside strings do not count", `{"a":"` + strings.Repeat("[{", MaxJSONDepth) + `"}`, true},
		{"an escaped quote keeps the string open", `{"a":"\"` + strings.Repeat("[", MaxJSONDepth+1) + `"}`, true},
		{"an escaped backslash closes it", `{"a":"\\"}` + deep(MaxJSONDepth+1), false},
		{"not JSON at all is not this check's", `]]]}}}`, true},
		{"empty", ``, true},
	} {
		if err := checkJSONDepth([]byte(c.doc)); (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %t", c.name, err, c.ok)
		}
	}
}

// A body nested past the limit is refused before its handler runs, whatever the route.
func TestServerRefusesDeepJSON(t *testing.T) {
	srv := NewServer()
	ran := false
	srv.Handle(http.MethodPut, "/_matrix/federation/v1/send/{txnId}", SendMaxBody, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))
	body := `{"pdus":[` + strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth) + `]}`
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/_matrix/federation/v1/send/1", strings.NewReader(body)))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "M_BAD_JSON") || ran {
		t.Errorf("deep body: %d %s, handler ran %t; want 400 M_BAD_JSON before the handler", rec.Code, rec.Body, ran)
	}
}
