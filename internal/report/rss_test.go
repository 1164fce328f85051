package report

import (
	"runtime"
	"testing"
)

func TestResidentSet(t *testing.T) {
	rss, peak, ok := ResidentSet()
	if runtime.GOOS != "linux" {
		if ok {
			t.Logf("ResidentSet reports %d / %d outside Linux", rss, peak)
		}
		return
	}
	if !ok || rss <= 0 || peak < rss {
		t.Errorf("ResidentSet = %d, %d, %v: want 0 < rss <= peak", rss, peak, ok)
	}
}
