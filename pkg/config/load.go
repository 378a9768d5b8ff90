package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	yaml "go.yaml.in/yaml/v3"
)

// ErrInvalid is wrapped by every load or validation failure.
var ErrInvalid = errors.New("invalid configuration")

// Problem is one thing wrong with a configuration.
type Problem struct {
	File  string
	Line  int // 0 from Validate and Warnings, which know no file; Load and Parse set it
	Field string
	Msg   string
}

func (p Problem) String() string { return p.Format("") }

// Format is String with a kind ("warning") between the location and the field.
func (p Problem) Format(kind string) string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if kind != "" {
		loc += ": " + kind
	}
	if p.Field == "" {
		return fmt.Sprintf("%s: %s", loc, p.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Field, p.Msg)
}

// Problems is every problem found; as an error it prints one per line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) Unwrap() error { return ErrInvalid }

// Load reads, overrides from the environment (L4LB_ + upper-cased key with _ for .,
// e.g. L4LB_ADMIN_LISTEN) and validates a configuration file. On any problem it returns
// Problems (errors.Is(err, ErrInvalid)) naming file, line and field.
func Load(path string) (*Config, error) {
	cfg, _, err := LoadWithWarnings(path)
	return cfg, err
}

// LoadWithWarnings is Load that also returns the Warnings of a valid configuration, each
// with its file and line.
func LoadWithWarnings(path string) (*Config, Problems, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return parse(path, data, os.LookupEnv)
}

// yamlLine finds the line in a YAML syntax error: go.yaml.in/yaml/v3 gives no typed
// position for those (only "yaml: line N: ..."). Everything after the syntax check takes
// its positions from the one parsed yaml.Node tree.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+):`)

// Parse is Load on bytes, with the environment given as a lookup function.
func Parse(file string, data []byte, env func(string) (string, bool)) (*Config, error) {
	cfg, _, err := parse(file, data, env)
	return cfg, err
}

func parse(file string, data []byte, env func(string) (string, bool)) (*Config, Problems, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line := 1
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		return nil, nil, Problems{{File: file, Line: line, Msg: "yaml: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if len(root.Content) == 0 || isNull(root.Content[0]) {
		return nil, nil, Problems{{File: file, Line: 1, Msg: "the file is empty: at least interfaces is required"}}
	}
	if top := root.Content[0]; top.Kind != yaml.MappingNode {
		return nil, nil, Problems{{File: file, Line: top.Line, Msg: "want a mapping of keys at the top of the file, not " + kindName(top)}}
	}
	lines := map[string]int{}
	// reported: fields (and everything under them) with a problem of their own already,
	// whose decoding or validation would only repeat it in other words.
	reported := map[string]bool{}
	var probs Problems
	walk(root.Content[0], "", reflect.TypeOf(Config{}), lines, func(field string, line int, msg string) {
		reported[field] = true
		probs = append(probs, Problem{File: file, Line: line, Field: field, Msg: msg})
	})

	// viper reads the same parsed tree: the file is parsed once.
	var values map[string]any
	if err := root.Content[0].Decode(&values); err != nil {
		return nil, nil, Problems{{File: file, Line: root.Content[0].Line, Msg: "yaml: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	v := viper.New()
	for k, d := range defaults() {
		v.SetDefault(k, d)
	}
	if err := v.MergeConfigMap(values); err != nil {
		return nil, nil, Problems{{File: file, Line: 1, Msg: err.Error()}}
	}
	// Environment overrides for every scalar key viper knows (defaults and file).
	fromEnv := map[string]string{} // key -> the variable that set it
	for _, k := range v.AllKeys() {
		name := "L4LB_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(k))
		if val, ok := env(name); ok {
			v.Set(k, val)
			fromEnv[k] = name
		}
	}
	// A problem with a value from the environment says so: the file's line alone would
	// point at a value that is not the one in use.
	envNote := func(p Problem) Problem {
		if name, ok := fromEnv[p.Field]; ok {
			p.Msg += " (set by " + name + ")"
		}
		return p
	}
	var cfg Config
	hook := mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)
	// A value of the wrong type is a problem of its own; the rest is still validated, so
	// one run lists everything wrong.
	if err := v.Unmarshal(&cfg, viper.DecodeHook(hook)); err != nil {
		for _, p := range decodeProblems(file, err, lines) {
			if under(reported, p.Field) {
				continue
			}
			reported[p.Field] = true
			probs = append(probs, envNote(p))
		}
	}
	for _, p := range Validate(&cfg) {
		if under(reported, p.Field) {
			continue
		}
		p.File, p.Line = file, lineOf(lines, p.Field)
		probs = append(probs, envNote(p))
	}
	if len(probs) > 0 {
		return nil, nil, sorted(probs)
	}
	var warns Problems
	for _, p := range Warnings(&cfg) {
		p.File, p.Line = file, lineOf(lines, p.Field)
		warns = append(warns, envNote(p))
	}
	return &cfg, sorted(warns), nil
}

func sorted(ps Problems) Problems {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return ps
}

// decodeProblems turns mapstructure's decode errors into problems with lines: each
// *mapstructure.DecodeError names its field (vips[0].port), whose line the walk of the
// yaml.Node tree recorded.
func decodeProblems(file string, err error, lines map[string]int) Problems {
	var out Problems
	var visit func(error)
	visit = func(e error) {
		switch u := e.(type) {
		case *mapstructure.DecodeError:
			// The innermost named field is the one at fault.
			var deeper *mapstructure.DecodeError
			if inner := u.Unwrap(); inner != nil && errors.As(inner, &deeper) {
				visit(inner)
				return
			}
			field := u.Name()
			out = append(out, Problem{File: file, Line: lineOf(lines, field), Field: field, Msg: fmt.Sprint(u.Unwrap())})
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				visit(c)
			}
		case interface{ Unwrap() error }:
			if c := u.Unwrap(); c != nil {
				visit(c)
				return
			}
			out = append(out, Problem{File: file, Line: 1, Msg: e.Error()})
		default:
			out = append(out, Problem{File: file, Line: 1, Msg: e.Error()})
		}
	}
	visit(err)
	if len(out) == 0 {
		out = Problems{{File: file, Line: 1, Msg: err.Error()}}
	}
	return out
}

// lineOf finds the line of field, or of its nearest parent; a key missing from the top
// of the file is on line 1.
func lineOf(lines map[string]int, field string) int {
	for f := field; f != ""; f = parent(f) {
		if l, ok := lines[f]; ok {
			return l
		}
	}
	return 1
}

// parent is the field that contains f: vips[0] for vips[0].name, vips for vips[0], "" for
// a top-level key.
func parent(f string) string {
	i := strings.LastIndexAny(f, ".[")
	if i < 0 {
		return ""
	}
	return f[:i]
}

// under says whether field or one of its parents is in set.
func under(set map[string]bool, field string) bool {
	for f := field; f != ""; f = parent(f) {
		if set[f] {
			return true
		}
	}
	return false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("the single value %q", n.Value)
}

// walk records the line of every key and reports keys that the type does not have and
// values of the wrong shape: a single value where a list or a mapping belongs, or the
// reverse. (Decoding alone would quietly turn "interfaces: l0" into a list.) A null value
// is a key left unset.
func walk(n *yaml.Node, path string, t reflect.Type, lines map[string]int, bad func(string, int, string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if isNull(n) {
		return
	}
	line, ok := lines[path]
	if !ok {
		line = n.Line
	}
	switch {
	case t.Kind() == reflect.Slice && n.Kind == yaml.ScalarNode:
		bad(path, line, fmt.Sprintf("%q: want a list, e.g. [%s]", n.Value, n.Value))
		return
	case t.Kind() == reflect.Slice && n.Kind != yaml.SequenceNode:
		bad(path, line, "want a list (- items), not "+kindName(n))
		return
	case t.Kind() == reflect.Struct && n.Kind == yaml.ScalarNode:
		bad(path, line, fmt.Sprintf("%q: want a mapping of keys", n.Value))
		return
	case t.Kind() == reflect.Struct && n.Kind != yaml.MappingNode:
		bad(path, line, "want a mapping of keys, not "+kindName(n))
		return
	case t.Kind() != reflect.Slice && t.Kind() != reflect.Struct && n.Kind != yaml.ScalarNode:
		bad(path, line, "want a single value, not "+kindName(n))
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[p] = k.Line
			ft, ok := fieldByTag(t, k.Value)
			if !ok {
				bad(p, k.Line, "unknown key")
				continue
			}
			walk(val, p, ft, lines, bad)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = item.Line
			walk(item, p, t.Elem(), lines, bad)
		}
	}
}

func fieldByTag(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if strings.Split(f.Tag.Get("mapstructure"), ",")[0] == key {
			return f.Type, true
		}
	}
	return nil, false
}
