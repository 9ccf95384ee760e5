package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestServerKeys(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := Open(ctx, b.newURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			day := time.UnixMilli(1_700_000_000_000)
			if got, err := s.ServerKeys(ctx, "a.example"); err != nil || len(got) != 0 {
				t.Fatalf("keys of an unknown server: %v, %v", got, err)
			}
			save := func(keys ...ServerKey) {
				t.Helper()
				if err := s.SaveServerKeys(ctx, keys); err != nil {
					t.Fatal(err)
				}
			}
			save(ServerKey{"a.example", "ed25519:1", "AAAA", day.Add(48 * time.Hour)},
				ServerKey{"a.example", "ed25519:2", "BBBB", day},
				ServerKey{"b.example", "ed25519:1", "CCCC", day})
			// An older validity for the same key does not shorten it, a later one extends
			// it, and another key under a recorded ID changes nothing.
			save(ServerKey{"a.example", "ed25519:1", "AAAA", day},
				ServerKey{"a.example", "ed25519:2", "BBBB", day.Add(time.Hour)},
				ServerKey{"a.example", "ed25519:2", "DDDD", day.Add(100 * time.Hour)})
			got, err := s.ServerKeys(ctx, "a.example")
			if err != nil {
				t.Fatal(err)
			}
			want := []ServerKey{
				{"a.example", "ed25519:1", "AAAA", day.Add(48 * time.Hour)},
				{"a.example", "ed25519:2", "BBBB", day.Add(time.Hour)},
			}
			if len(got) != len(want) {
				t.Fatalf("keys %+v, want %+v", got, want)
			}
			for i := range want {
				if got[i].KeyID != want[i].KeyID || got[i].Key != want[i].Key || !got[i].ValidUntil.Equal(want[i].ValidUntil) {
					t.Errorf("key %d = %+v, want %+v", i, got[i], want[i])
				}
			}
			if err := s.SaveServerKeys(ctx, []ServerKey{{ServerName: "c.example"}}); err == nil {
				t.Error("an incomplete key was saved")
			}
		})
	}
}

func TestServerKeyResponses(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := openTest(t, b.newURL(t))
			day := time.UnixMilli(1_700_000_000_000)
			if got, err := s.ServerKeyResponses(ctx, "a.example"); err != nil || len(got) != 0 {
				t.Fatalf("responses of an unknown server: %v, %v", got, err)
			}
			// raw is what a server signed: any JSON object, kept byte for byte (the order and
			// spacing included).
			raw := func(n int) []byte { return []byte(fmt.Sprintf(`{"n": %d, "server_name":"a.example"}`, n)) }
			save := func(r ServerKeyResponse) {
				t.Helper()
				if err := s.SaveServerKeyResponse(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			read := func(server string) []ServerKeyResponse {
				t.Helper()
				got, err := s.ServerKeyResponses(ctx, server)
				if err != nil {
					t.Fatal(err)
				}
				return got
			}
			save(ServerKeyResponse{"a.example", []string{"ed25519:1"}, raw(1), day, day})
			// The same key set valid for longer replaces it; the key IDs' order does not
			// matter.
			save(ServerKeyResponse{"a.example", []string{"ed25519:2", "ed25519:1"}, raw(2), day, day})
			save(ServerKeyResponse{"a.example", []string{"ed25519:1", "ed25519:2"}, raw(3), day.Add(time.Hour), day.Add(time.Hour)})
			// A replay of an older one for the same set changes nothing.
			save(ServerKeyResponse{"a.example", []string{"ed25519:1", "ed25519:2"}, raw(2), day, day.Add(2 * time.Hour)})
			save(ServerKeyResponse{"b.example", []string{"ed25519:1"}, raw(9), day, day})

			got := read("a.example")
			want := []ServerKeyResponse{
				{"a.example", []string{"ed25519:1", "ed25519:2"}, raw(3), day.Add(time.Hour), day.Add(time.Hour)},
				{"a.example", []string{"ed25519:1"}, raw(1), day, day},
			}
			if len(got) != len(want) {
				t.Fatalf("responses %+v, want %+v", got, want)
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.ServerName != w.ServerName || !slices.Equal(g.KeyIDs, w.KeyIDs) || string(g.Raw) != string(w.Raw) ||
					!g.ValidUntil.Equal(w.ValidUntil) || !g.FetchedAt.Equal(w.FetchedAt) {
					t.Errorf("response %d = %+v (raw %s), want %+v (raw %s)", i, g, g.Raw, w, w.Raw)
				}
			}

			// Bounded: a server rotating its key on every fetch keeps its latest responses.
			for i := range MaxServerKeyResponses + 5 {
				save(ServerKeyResponse{"c.example", []string{fmt.Sprintf("ed25519:r%02d", i)}, raw(i), day, day.Add(time.Duration(i) * time.Minute)})
			}
			got = read("c.example")
			if len(got) != MaxServerKeyResponses {
				t.Fatalf("%d responses of a rotating server kept, want %d", len(got), MaxServerKeyResponses)
			}
			for _, r := range got {
				if r.KeyIDs[0] < "ed25519:r05" {
					t.Errorf("an early response (%s) outlived later ones", r.KeyIDs[0])
				}
			}
			if n := len(read("a.example")); n != 2 {
				t.Errorf("trimming one server dropped another's responses: %d left of 2", n)
			}

			for _, bad := range []ServerKeyResponse{
				{ServerName: "", KeyIDs: []string{"ed25519:1"}, Raw: raw(1)},
				{ServerName: "d.example", Raw: raw(1)},
				{ServerName: "d.example", KeyIDs: []string{"ed25519:1"}, Raw: []byte(`{"cut`)},
			} {
				if err := s.SaveServerKeyResponse(ctx, bad); err == nil {
					t.Errorf("an incomplete response was saved: %+v", bad)
				}
			}
		})
	}
}
