package resolver_test

import (
	"testing"

	"github.com/roomsync/roomsync/resolver"
)

// The server ACL matcher, on the spec's rules and the cases Synapse's tests check: deny wins,
// nothing allowed by default, ports ignored, IP literals refused on request, globs with * and
// ?, case folded.
func TestServerACL(t *testing.T) {
	cases := []struct {
		name    string
		content string
		allowed []string
		denied  []string
	}{
		{"allow all", `{"allow":["*"]}`,
			[]string{"matrix.org", "example.com:8448", "1.2.3.4", "[::1]:8448"}, nil},
		{"no allow denies everyone", `{"deny":["evil.example"]}`,
			nil, []string{"matrix.org", "evil.example"}},
		{"empty content denies everyone", `{}`, nil, []string{"matrix.org"}},
		{"deny wins over allow", `{"allow":["*"],"deny":["evil.example","*.evil.example"]}`,
			[]string{"good.example", "notevil.example"}, []string{"evil.example", "sub.evil.example", "evil.example:8448", "a.b.evil.example"}},
		{"port is not matched", `{"allow":["example.com"]}`,
			[]string{"example.com", "example.com:8448", "example.com:1"}, []string{"example.co", "www.example.com"}},
		{"a glob with a port never matches", `{"allow":["example.com:8448"]}`,
			nil, []string{"example.com:8448", "example.com"}},
		{"? is exactly one character", `{"allow":["server?.example"]}`,
			[]string{"server1.example", "serverx.example"}, []string{"server.example", "server12.example"}},
		{"* may be empty and span dots", `{"allow":["*example.com"]}`,
			[]string{"example.com", "a.example.com", "a.b.example.com", "myexample.com"}, []string{"example.org"}},
		{"several stars backtrack", `{"allow":["*a*b*c"]}`,
			[]string{"abc", "xaybzc", "aabbcc"}, []string{"acb", "ab", "cba"}},
		{"case is folded", `{"allow":["Matrix.ORG"],"deny":["EVIL.*"]}`,
			[]string{"matrix.org", "MATRIX.org"}, []string{"evil.matrix.org", "Evil.example"}},
		{"IP literals allowed by default", `{"allow":["*"]}`,
			[]string{"10.0.0.1", "10.0.0.1:8448", "[2001:db8::1]"}, nil},
		{"IP literals refused", `{"allow":["*"],"allow_ip_literals":false}`,
			[]string{"matrix.org", "1.2.3.example"}, []string{"10.0.0.1", "10.0.0.1:8448", "[2001:db8::1]", "[::1]:8448"}},
		{"allow_ip_literals not a boolean is its default", `{"allow":["*"],"allow_ip_literals":"no"}`,
			[]string{"10.0.0.1"}, nil},
		{"IPv6 globs keep their brackets", `{"allow":["[2001:db8::*]"]}`,
			[]string{"[2001:db8::1]", "[2001:db8::1]:8448"}, []string{"[2001:db9::1]"}},
		{"entries that are not strings are ignored", `{"allow":[1,null,{"a":"b"},"ok.example"],"deny":[true]}`,
			[]string{"ok.example"}, []string{"1", "true"}},
		{"allow not a list allows nothing", `{"allow":"*"}`, nil, []string{"matrix.org"}},
	}
	for _, tc := range cases {
		acl := resolver.ParseServerACL([]byte(tc.content))
		for _, s := range tc.allowed {
			if !acl.Allows(s) {
				t.Errorf("%s: %s denied, want allowed", tc.name, s)
			}
		}
		for _, s := range tc.denied {
			if acl.Allows(s) {
				t.Errorf("%s: %s allowed, want denied", tc.name, s)
			}
		}
	}
}
