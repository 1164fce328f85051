// Package report holds what galleon's examples show a person: a progress bar
// for long runs, PNG plots of curves, and the one-line JSON result that every
// example prints last under -json.
package report
