package store

import (
	"context"
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
