// Package style holds the checks of the code's shape that span the whole
// module; it has no code of its own.
package style
