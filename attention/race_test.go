//go:build race

package attention

// raceEnabled lets allocation-count tests step aside: the race detector's
// own bookkeeping allocates inside synchronization.
const raceEnabled = true
