package portlist

import "testing"

func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		have string
		add  Range
		want string
	}{
		{"", Range{40000, 59999}, "40000-59999"},
		{"8080", Range{40000, 59999}, "8080,40000-59999"},
		{"39000-40010,59990-61000", Range{40000, 59999}, "39000-61000"},
		{"40000-59999", Range{40000, 59999}, "40000-59999"},
		{"7", Range{8, 9}, "7-9"},
		{"8080,40000-49999,50000-50010\n", Range{40000, 59999}, "8080,40000-59999"},
		{"65535", Range{1, 65534}, "1-65535"},
	} {
		have, err := Parse(tc.have)
		if err != nil {
			t.Fatal(err)
		}
		if got := have.Add(tc.add).String(); got != tc.want {
			t.Errorf("%q + %v = %q, want %q", tc.have, tc.add, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	l, err := Parse("8080,40000-49999,50000-50010\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "8080,40000-50010" {
		t.Errorf("normalised %q", got)
	}
	if !l.Contains(8080) || !l.Contains(50010) || l.Contains(8081) || l.Contains(50011) {
		t.Errorf("Contains wrong for %s", l)
	}
	want := Of(Range{40000, 59999})
	if l.Covers(want) {
		t.Error("partial reservation counted as covering")
	}
	if !l.Add(want...).Covers(want) {
		t.Error("merged list does not cover the range")
	}
	if r, err := Parse(""); err != nil || len(r) != 0 {
		t.Errorf("empty list: %v %v", r, err)
	}
	for _, bad := range []string{"x", "5-1", "70000", "80-x"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
