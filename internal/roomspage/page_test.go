package roomspage

import (
	"bytes"
	"context"
	"encoding/xml"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"maunium.net/go/mautrix/id"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fixturesync"
	"github.com/roomsync/roomsync/store"
)

// pageFixture serves the page over a store holding a forked room with two gaps (a peer
// withholds two messages) and a RoomSync naming it, whose status carries markup to escape.
type pageFixture struct {
	srv      *httptest.Server
	room     *fixturepeer.Room
	withheld []id.EventID
}

func newPageFixture(t *testing.T) *pageFixture {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 41, Events: 260, ForkRate: 0.2, MergeRate: 0.3, LinearRunRate: 0.02, LinearRunLength: 30})
	var withheld []id.EventID
	for _, i := range []int{120, 200} {
		for room.Events[i].Type != "m.room.message" {
			i++
		}
		withheld = append(withheld, room.Events[i].ID)
	}
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldAllBut(withheld...)))
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	res := fixturesync.Sync(t, st, room, []*fixturepeer.Peer{peer}, 10)

	scheme := runtime.NewScheme()
	if err := roomsyncv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	rs := &roomsyncv1alpha1.RoomSync{ObjectMeta: metav1.ObjectMeta{Namespace: "archive", Name: "community"}}
	rs.Status = roomsyncv1alpha1.RoomSyncStatus{
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "GapUnfillable",
			Message: "2 gaps no peer holds <script>alert(1)</script>", LastTransitionTime: metav1.Now()}},
		Rooms: []roomsyncv1alpha1.RoomStatus{{ID: string(room.ID), Events: res.Room.Events, Gaps: int64(res.Gaps),
			Unfillable: int64(res.Unfillable), EarliestDepth: res.Room.MinDepth, LatestDepth: res.Room.MaxDepth,
			ForwardExtremities: int32(res.Room.ForwardExtremities)}},
		Peers:   []roomsyncv1alpha1.PeerStatus{{ServerName: peer.ServerName(), Healthy: true}},
		Summary: roomsyncv1alpha1.Summary{Rooms: 1, Events: res.Room.Events, Gaps: int64(res.Gaps), Unfillable: int64(res.Unfillable)},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(rs).WithStatusSubresource(rs).Build()

	mux := http.NewServeMux()
	add := func(pattern string, h http.Handler) error { mux.Handle(pattern, h); return nil }
	h := &Handlers{Client: c, Store: st, Log: logr.Discard()}
	if err := h.Register(add); err != nil {
		t.Fatal(err)
	}
	// The export route of the same listener lives beside the page's without a clash.
	mux.Handle("GET /rooms/{roomId}/export", http.NotFoundHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &pageFixture{srv: srv, room: room, withheld: withheld}
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// The page names the RoomSync, its room and both gaps with the peer's answers, escapes what
// it shows, loads nothing from elsewhere, and links to pictures that are well-formed SVG.
func TestRoomsPage(t *testing.T) {
	f := newPageFixture(t)
	resp, body := get(t, f.srv.URL+"/rooms")
	page := string(body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /rooms: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for _, want := range []string{"archive/community", string(f.room.ID), "GapUnfillable", "not_found",
		"&lt;script&gt;alert(1)&lt;/script&gt;", pictureURL(string(f.room.ID), "")} {
		if !strings.Contains(page, strings.ReplaceAll(want, "&", "&amp;")) && !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "{{") || strings.Contains(page, "[{") {
		t.Error("the page carries a status message's markup unescaped")
	}
	for _, g := range f.withheld {
		if !strings.Contains(page, string(g)[:19]) {
			t.Errorf("the page does not name the gap %s", g)
		}
	}
	for _, external := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(page, `src="`+external) || strings.Contains(page, `href="`+external) {
			t.Errorf("the page loads something from elsewhere (%s)", external)
		}
	}

	for _, around := range []string{"", string(f.withheld[0])} {
		resp, svg := get(t, f.srv.URL+pictureURL(string(f.room.ID), around))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/svg+xml" {
			t.Fatalf("picture around %q: %s %s: %s", around, resp.Status, resp.Header.Get("Content-Type"), svg)
		}
		dec := xml.NewDecoder(bytes.NewReader(svg))
		for {
			if _, err := dec.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("picture around %q does not parse: %v", around, err)
			}
		}
		if around != "" && !bytes.Contains(svg, []byte(`id="gap-`+around+`"`)) {
			t.Errorf("the picture around the gap %s does not show it", around)
		}
	}
	for _, c := range []struct {
		path string
		code int
	}{
		{pictureURL("!nothing:example.org", ""), http.StatusNotFound},
		{pictureURL(string(f.room.ID), "$nothing"), http.StatusNotFound},
		{pictureURL(string(f.room.ID), "") + "?depth=100000", http.StatusBadRequest},
		{"/rooms/x/export", http.StatusNotFound},
	} {
		if resp, _ := get(t, f.srv.URL+c.path); resp.StatusCode != c.code {
			t.Errorf("GET %s: %s, want %d", c.path, resp.Status, c.code)
		}
	}
}

// Headless Chromium shows the page, its pictures loaded, without a console error: the
// screenshot is a PNG that is not one colour.
func TestRoomsPageInChromium(t *testing.T) {
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (.ci/run installs Debian's chromium)")
		}
		t.Skip("chromium is not installed: apt-get install chromium (CI installs it)")
	}
	f := newPageFixture(t)
	dir := t.TempDir()
	shot := filepath.Join(dir, "rooms.png")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--disable-gpu", "--no-sandbox",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--enable-logging=stderr", "--v=0",
		"--screenshot="+shot, "--window-size=1280,1600", f.srv.URL+"/rooms")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	for _, bad := range []string{"Refused to", "Uncaught", "Failed to load resource"} {
		if bytes.Contains(out, []byte(bad)) {
			t.Errorf("chromium reported %q:\n%s", bad, out)
		}
	}
	file, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, out)
	}
	defer file.Close()
	img, err := png.Decode(file)
	if err != nil {
		t.Fatalf("the screenshot is no PNG: %v", err)
	}
	if colors := distinctColors(img, 50); colors < 10 {
		t.Errorf("the screenshot has %d colours: a blank page", colors)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1600 {
		t.Errorf("screenshot %v, want 1280×1600", b)
	}
	if keep := os.Getenv("ROOMSYNC_SCREENSHOT_OUT"); keep != "" {
		data, _ := os.ReadFile(shot)
		_ = os.WriteFile(keep, data, 0o644)
	}
}

// distinctColors counts the colours of img, stopping at limit.
func distinctColors(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}
