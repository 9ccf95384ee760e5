package fixturepeer

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// heapMetric is the heap held by objects, live or not yet swept: what an answer decoded
// whole would pile up.
const heapMetric = "/memory/classes/heap/objects:bytes"

// PeakHeapGrowth runs f and returns how far the heap grew, at its peak while f ran, past
// what it held after a collection just before. It samples every millisecond, so a peak
// shorter than that may be missed; an answer decoded whole lasts far longer. Garbage left
// by f (and by anything running alongside, such as a peer's handlers) counts until the
// collector frees it, so bounds should leave room for the heap the collector lets grow.
func PeakHeapGrowth(f func()) uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()

	var wg sync.WaitGroup
	peak := base // the sampler's until wg.Wait returns
	done := make(chan struct{})
	wg.Go(func() {
		s := []metrics.Sample{{Name: heapMetric}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	f()
	close(done)
	wg.Wait()
	metrics.Read(sample)
	peak = max(peak, sample[0].Value.Uint64())
	return peak - base
}
