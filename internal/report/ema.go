package report

// EMA is the exponential moving average a progress bar shows for a noisy
// per-step loss. The first value starts it (no bias toward zero).
type EMA struct {
	Decay   float64 // weight of the previous average, e.g. 0.95
	value   float64
	started bool
}

// Add folds x into the average and returns it.
func (e *EMA) Add(x float64) float64 {
	if !e.started {
		e.value, e.started = x, true
		return x
	}
	e.value = e.Decay*e.value + (1-e.Decay)*x
	return e.value
}

// Value returns the current average (0 before the first Add).
func (e *EMA) Value() float64 { return e.value }
