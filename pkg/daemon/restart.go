package daemon

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/l4lb/l4lb/pkg/config"
)

// reloadable are the configuration keys a reload applies, with everything under them;
// every other key needs a restart (restartKeys lists them, and docs/operations.md,
// Reload, is checked against both lists).
var reloadable = map[string]bool{
	"vips": true, "bgp.communities": true, "nexthop": true, "encap": true, "drain_delay": true,
	"prefilter.deny": true, "prefilter.deny_files": true, "monitor.drops": true, "monitor.rate": true,
}

// reloadableKeys lists the reloadable keys, sorted.
func reloadableKeys() []string {
	out := make([]string, 0, len(reloadable))
	for k := range reloadable {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// restartKeys lists, sorted, every configuration key that only a restart applies: each
// leaf of config.Config that is neither reloadable nor under a reloadable key. A list of
// entries (bgp.peers) is one key.
func restartKeys() []string {
	var out []string
	var walk func(key string, t reflect.Type)
	walk = func(key string, t reflect.Type) {
		if reloadable[key] {
			return
		}
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			out = append(out, key)
			return
		}
		for i := range t.NumField() {
			walk(fieldKey(key, t.Field(i)), t.Field(i).Type)
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
	slices.Sort(out)
	return out
}

// fieldKey is the configuration key of field f of the struct at key (its mapstructure
// name under key).
func fieldKey(key string, f reflect.StructField) string {
	name := strings.Split(f.Tag.Get("mapstructure"), ",")[0]
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	if key != "" {
		name = key + "." + name
	}
	return name
}

// needsRestart names every key that changed between old and cur and that only a restart
// can apply, with its old and new value (secrets are not printed).
func needsRestart(old, cur *config.Config) error {
	var errs []error
	diffKeys("", reflect.ValueOf(*old), reflect.ValueOf(*cur), func(key string, o, c reflect.Value) {
		errs = append(errs, fmt.Errorf("%s: changed from %s to %s: needs a restart", key, show(key, o), show(key, c)))
	})
	return errors.Join(errs...)
}

// diffKeys walks two values of the same type by their configuration key names and calls
// changed for each leaf (or list whose length changed) that differs, skipping reloadable
// keys.
func diffKeys(key string, o, c reflect.Value, changed func(string, reflect.Value, reflect.Value)) {
	if reloadable[key] || reflect.DeepEqual(o.Interface(), c.Interface()) {
		return
	}
	switch o.Kind() {
	case reflect.Struct:
		t := o.Type()
		for i := range t.NumField() {
			diffKeys(fieldKey(key, t.Field(i)), o.Field(i), c.Field(i), changed)
		}
		return
	case reflect.Slice:
		if o.Len() == c.Len() && o.Type().Elem().Kind() == reflect.Struct {
			for i := range o.Len() {
				diffKeys(fmt.Sprintf("%s[%d]", key, i), o.Index(i), c.Index(i), changed)
			}
			return
		}
	case reflect.Pointer:
		if !o.IsNil() && !c.IsNil() {
			diffKeys(key, o.Elem(), c.Elem(), changed)
			return
		}
	}
	changed(key, o, c)
}

func show(key string, v reflect.Value) string {
	if strings.HasSuffix(key, "password") {
		return "(secret)"
	}
	switch {
	case v.Kind() == reflect.Pointer && v.IsNil():
		return "(unset)"
	case v.Kind() == reflect.Pointer:
		v = v.Elem()
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		return fmt.Sprintf("%d entries", v.Len())
	}
	if v.Kind() == reflect.String {
		return fmt.Sprintf("%q", v.String())
	}
	return fmt.Sprint(v.Interface())
}
