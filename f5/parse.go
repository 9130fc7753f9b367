// Package f5 reads a BIG-IP configuration in tmsh text form (bigip.conf,
// bigip_base.conf or the output of `tmsh list`) and translates what
// edgeproxy can do the same way into a config.Config, with a report of
// everything it could not carry over.
package f5

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	// ErrSyntax is wrapped by every error about text the parser cannot read.
	ErrSyntax = errors.New("tmsh syntax error")
	// ErrNothing is returned when the input holds no configuration object.
	ErrNothing = errors.New("no tmsh configuration objects")
)

// Stmt is one statement of the tmsh grammar: words, optionally followed by
// a { } block of further statements. A top-level object such as
// `ltm virtual /Common/vs { ... }` is a Stmt whose Words are the object
// header; `pool /Common/p` inside it is a Stmt with two words and no block.
type Stmt struct {
	Words []string
	// Quoted tells, per word, whether it was written as a quoted string.
	Quoted []bool
	// Block holds the statements between the braces; HasBlock tells an
	// empty block ("{ }") from no block at all.
	Block    []*Stmt
	HasBlock bool
	// Raw is the verbatim text between the braces of a script object
	// (iRules, iCall scripts, iApp templates), whose bodies are Tcl and
	// not tmsh statements. IsRaw is set for those.
	Raw   string
	IsRaw bool
	// File, Line and Col locate the first word (1-based).
	File      string
	Line, Col int
}

// File is a parsed configuration.
type File struct {
	Name    string
	Objects []*Stmt
}

// SyntaxError locates text the parser cannot read.
type SyntaxError struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Unwrap lets errors.Is(err, ErrSyntax) match.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// Key is the first word of a statement ("" for none).
func (s *Stmt) Key() string {
	if len(s.Words) == 0 {
		return ""
	}
	return s.Words[0]
}

// Value is the second word of a statement ("" for none).
func (s *Stmt) Value() string {
	if len(s.Words) < 2 {
		return ""
	}
	return s.Words[1]
}

// Get returns the first statement of the block whose key is key, or nil.
func (s *Stmt) Get(key string) *Stmt {
	for _, c := range s.Block {
		if c.Key() == key {
			return c
		}
	}
	return nil
}

// Attr returns the value of the statement `key value` in the block.
func (s *Stmt) Attr(key string) (string, bool) {
	c := s.Get(key)
	if c == nil || len(c.Words) < 2 {
		return "", false
	}
	return c.Words[1], true
}

// Has reports whether the block holds a statement with key key.
func (s *Stmt) Has(key string) bool { return s.Get(key) != nil }

// Items lists the entries of a list-style block such as
// `vlans { /Common/external }` or `profiles { /Common/fastL4 { } }`: every
// word of every statement without a block, and the first word of the ones
// with a block. A statement `key none` or a missing key gives nil.
func (s *Stmt) Items(key string) []*Stmt {
	c := s.Get(key)
	if c == nil || !c.HasBlock {
		return nil
	}
	var out []*Stmt
	for _, it := range c.Block {
		if it.HasBlock {
			out = append(out, it)
			continue
		}
		for i, w := range it.Words {
			out = append(out, &Stmt{Words: []string{w}, Quoted: []bool{it.Quoted[i]}, File: it.File, Line: it.Line, Col: it.Col})
		}
	}
	return out
}

// Header is the object header as written, e.g. "ltm virtual /Common/vs".
func (s *Stmt) Header() string { return strings.Join(s.Words, " ") }

// rawKinds are object headers whose bodies are scripts, kept verbatim.
var rawKinds = [][]string{
	{"ltm", "rule"},
	{"gtm", "rule"},
	{"rule"},
	{"pem", "irule"},
	{"sys", "icall", "script"},
	{"sys", "application", "template"},
	{"sys", "application", "apl-script"},
	{"cli", "script"},
	{"cli", "alias"},
}

func isRawKind(words []string) bool {
	for _, k := range rawKinds {
		if len(words) == len(k)+1 && equalWords(words[:len(k)], k) {
			return true
		}
	}
	return false
}

func equalWords(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Parse reads tmsh configuration text. name is used in error messages.
func Parse(name string, data []byte) (*File, error) {
	p := &parser{file: name, src: string(data), line: 1, col: 1}
	f := &File{Name: name}
	for {
		p.skipSpace(true)
		if p.eof() {
			break
		}
		if p.peek() == '}' {
			return nil, p.errf(p.line, p.col, "unbalanced '}': no object is open here")
		}
		if p.peek() == '{' {
			return nil, p.errf(p.line, p.col, "'{' without an object header before it")
		}
		st, err := p.statement(0, true)
		if err != nil {
			return nil, err
		}
		if !st.HasBlock {
			return nil, p.errf(st.Line, st.Col, "cannot read %q: expected an object such as `ltm virtual NAME { ... }` (a header followed by a { } block)", truncate(st.Header(), 60))
		}
		f.Objects = append(f.Objects, st)
	}
	if len(f.Objects) == 0 {
		return nil, fmt.Errorf("parse %s: %w", name, ErrNothing)
	}
	return f, nil
}

// Merge joins parsed files into one, as the BIG-IP reads bigip_base.conf
// and bigip.conf together; each statement keeps its own file and line.
func Merge(files ...*File) *File {
	out := &File{}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		out.Objects = append(out.Objects, f.Objects...)
	}
	out.Name = strings.Join(names, ", ")
	return out
}

type parser struct {
	file      string
	src       string
	pos       int
	line, col int
}

func (p *parser) errf(line, col int, format string, args ...any) error {
	return &SyntaxError{File: p.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) eof() bool  { return p.pos >= len(p.src) }
func (p *parser) peek() byte { return p.src[p.pos] }

func (p *parser) advance() byte {
	c := p.src[p.pos]
	p.pos++
	if c == '\n' {
		p.line++
		p.col = 1
	} else {
		p.col++
	}
	return c
}

// skipSpace skips blanks and comments; newlines too when nl is set.
// It reports whether it crossed a newline.
func (p *parser) skipSpace(nl bool) bool {
	crossed := false
	for !p.eof() {
		c := p.peek()
		switch {
		case c == '\n':
			if !nl {
				return crossed
			}
			crossed = true
			p.advance()
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			p.advance()
		case c == '\\' && p.pos+1 < len(p.src) && (p.src[p.pos+1] == '\n' || p.src[p.pos+1] == '\r'):
			// line continuation
			p.advance()
			if p.peek() == '\r' {
				p.advance()
			}
			if !p.eof() && p.peek() == '\n' {
				p.advance()
			}
		case c == '#':
			for !p.eof() && p.peek() != '\n' {
				p.advance()
			}
		default:
			return crossed
		}
	}
	return crossed
}

const maxDepth = 64

// statement reads words up to the end of the line, a '}' or a block; then
// the block if there is one.
func (p *parser) statement(depth int, top bool) (*Stmt, error) {
	st := &Stmt{File: p.file, Line: p.line, Col: p.col}
	for {
		p.skipSpace(false)
		if p.eof() {
			return st, nil
		}
		c := p.peek()
		switch c {
		case '\n':
			return st, nil
		case '}':
			return st, nil
		case '{':
			if len(st.Words) == 0 {
				return nil, p.errf(p.line, p.col, "'{' without a name before it")
			}
			if depth+1 > maxDepth {
				return nil, p.errf(p.line, p.col, "blocks nested deeper than %d", maxDepth)
			}
			if top && isRawKind(st.Words) {
				raw, err := p.rawBlock()
				if err != nil {
					return nil, err
				}
				st.Raw, st.IsRaw, st.HasBlock = raw, true, true
				return st, nil
			}
			block, err := p.block(depth + 1)
			if err != nil {
				return nil, err
			}
			st.Block, st.HasBlock = block, true
			return st, nil
		case '"':
			w, err := p.quoted()
			if err != nil {
				return nil, err
			}
			st.Words = append(st.Words, w)
			st.Quoted = append(st.Quoted, true)
		default:
			st.Words = append(st.Words, p.word())
			st.Quoted = append(st.Quoted, false)
		}
	}
}

// block reads the statements after a '{' up to and including its '}'.
func (p *parser) block(depth int) ([]*Stmt, error) {
	openLine, openCol := p.line, p.col
	p.advance() // '{'
	list := []*Stmt{}
	for {
		p.skipSpace(true)
		if p.eof() {
			return nil, p.errf(openLine, openCol, "unbalanced '{': the block opened here is never closed (missing '}')")
		}
		if p.peek() == '}' {
			p.advance()
			if p.line == openLine {
				list = splitPairs(list)
			}
			return list, nil
		}
		st, err := p.statement(depth, false)
		if err != nil {
			return nil, err
		}
		list = append(list, st)
	}
}

// flags are the bare words tmsh prints without a value.
var flags = map[string]bool{
	"vlans-enabled": true, "vlans-disabled": true, "enabled": true, "disabled": true,
	"ip-forward": true, "l2-forward": true, "reject": true, "dhcp": true, "internal": true,
	"stateless": true, "perf-http": true, "message-routing": true, "untagged": true,
	"tagged": true, "blackhole": true,
}

// splitPairs reads a block written on one line (tmsh's one-line output,
// `{ pool /Common/sp type snat }`), whose statements run together: the
// words are split into flags and key value pairs, and a block belongs to
// the word just before it. Lists (`{ /Common/a /Common/b }`) read the
// same either way through Items.
func splitPairs(list []*Stmt) []*Stmt {
	var out []*Stmt
	for _, s := range list {
		n := len(s.Words)
		if n == 1 || n == 2 && !s.HasBlock {
			out = append(out, s)
			continue
		}
		for i := 0; i < n; {
			switch {
			case i == n-1:
				last := *s
				last.Words, last.Quoted = s.Words[i:], s.Quoted[i:]
				out = append(out, &last)
				i++
			case flags[s.Words[i]] && !s.Quoted[i]:
				out = append(out, &Stmt{Words: s.Words[i : i+1 : i+1], Quoted: s.Quoted[i : i+1 : i+1], File: s.File, Line: s.Line, Col: s.Col})
				i++
			case i+1 == n-1 && s.HasBlock:
				// "key name { ... }": the block is the last word's.
				out = append(out, &Stmt{Words: s.Words[i : i+1 : i+1], Quoted: s.Quoted[i : i+1 : i+1], File: s.File, Line: s.Line, Col: s.Col})
				i++
			default:
				out = append(out, &Stmt{Words: s.Words[i : i+2 : i+2], Quoted: s.Quoted[i : i+2 : i+2], File: s.File, Line: s.Line, Col: s.Col})
				i += 2
			}
		}
	}
	return out
}

// rawBlock reads a Tcl body verbatim, counting braces the way Tcl does in
// a braced word: a backslash escapes the next character.
func (p *parser) rawBlock() (string, error) {
	openLine, openCol := p.line, p.col
	p.advance() // '{'
	start := p.pos
	depth := 1
	for !p.eof() {
		c := p.advance()
		switch c {
		case '\\':
			if !p.eof() {
				p.advance()
			}
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return p.src[start : p.pos-1], nil
			}
		}
	}
	return "", p.errf(openLine, openCol, "unbalanced '{': the script block opened here is never closed (missing '}')")
}

// word reads a bare word: everything up to blank, brace or end of line.
func (p *parser) word() string {
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '{' || c == '}' {
			break
		}
		p.advance()
	}
	return p.src[start:p.pos]
}

// quoted reads a "..." string. \" and \\ are unescaped; other backslash
// sequences (\r, \n in monitor strings, regex escapes) are kept as written.
func (p *parser) quoted() (string, error) {
	openLine, openCol := p.line, p.col
	p.advance() // '"'
	var b strings.Builder
	for !p.eof() {
		c := p.advance()
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.eof() {
				break
			}
			n := p.advance()
			switch n {
			case '"', '\\':
				b.WriteByte(n)
			default:
				b.WriteByte('\\')
				b.WriteByte(n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", p.errf(openLine, openCol, "unterminated quoted string (missing closing '\"')")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
