package e2e

import (
	"context"
	"encoding/xml"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
)

// dagPictureEnv names the file TestDAGPictureOfADendriteRoom writes; without it the test is
// skipped, so that `make test` does not spend minutes on a picture. The README's picture:
//
//	ROOMSYNC_DAG_PICTURE=$PWD/docs/dag-dendrite.svg go test ./test/e2e -run TestDAGPictureOfADendriteRoom
const dagPictureEnv = "ROOMSYNC_DAG_PICTURE"

// TestDAGPictureOfADendriteRoom draws a real room: two Dendrites build a room whose DAG forks
// and merges while both change its state, roomsync syncs it (joined, so nothing is
// redacted), and `roomsync inspect --dag` draws it.
func TestDAGPictureOfADendriteRoom(t *testing.T) {
	out := os.Getenv(dagPictureEnv)
	if out == "" {
		t.Skipf("set %s=FILE to draw a Dendrite room into FILE", dagPictureEnv)
	}
	a, b := startDendrite(t), startDendrite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	us := newSyncIdentity(t, a, b)
	fr, err := dendritepeer.BuildForkedRoom(ctx, a.peer, b.peer, dendritepeer.ForkedRoomOptions{
		Rounds: 10, MessagesPerRound: 4, Seed: 3,
		AfterSetUp: func(_ context.Context, room string) error { return us.sync(t, room) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := us.sync(t, fr.RoomID); err != nil {
		t.Fatal(err)
	}
	svg, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", us.storeURL, "--room", fr.RoomID, "--dag")
	if code != 0 {
		t.Fatalf("inspect --dag exited %d", code)
	}
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the SVG does not parse: %v", err)
		}
	}
	if err := os.WriteFile(out, []byte(svg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events of %s drawn into %s (%d bytes)", fr.Events, fr.RoomID, out, len(svg))
}
