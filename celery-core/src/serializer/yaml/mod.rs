//! kombu's yaml: PyYAML's `safe_dump` and `safe_load`; see [`Yaml`].

mod emit;
mod load;
mod resolve;

use serde_json::Value;

use super::Serializer;

/// yaml (`application/x-yaml`, `utf-8`): `!!binary` is kombu's bytes value and `!!timestamp`
/// its datetime or date value, both ways.
///
/// Reading follows PyYAML's `safe_load`, which resolves YAML 1.1 plain scalars (`yes` is true,
/// `017` is octal, `2026-01-02` is a date) and refuses every tag it has no safe constructor for
/// (`!!python/object…` included); aliases may not expand a document beyond a multiple of its
/// size. Writing produces one line of flow YAML, ASCII only with escapes.
pub struct Yaml;

impl Serializer for Yaml {
    fn name(&self) -> &str {
        "yaml"
    }
    fn content_type(&self) -> &str {
        "application/x-yaml"
    }
    fn content_encoding(&self) -> &str {
        "utf-8"
    }
    fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut out = String::with_capacity(128);
        emit::write_value(value, &mut out)?;
        out.push('\n');
        Ok(out.into_bytes())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("yaml: not UTF-8: {e}"))?;
        load::load(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Result<Value, String> {
        Yaml.decode(text.as_bytes())
    }

    #[test]
    fn sets_from_python_read_as_lists_of_their_members() {
        // `yaml.safe_dump({'args': [{1, 2}], 'k': {'a', 'b'}})`
        let text = "args:\n- !!set\n  1: null\n  2: null\nk: !!set\n  a: null\n  b: null\n";
        assert_eq!(
            load(text).unwrap(),
            json!({"args": [[1, 2]], "k": ["a", "b"]})
        );
        assert!(load("!!set\n  a: 1\n").unwrap_err().contains("null"));
    }

    #[test]
    fn plain_scalars_resolve_like_pyyaml() {
        let cases = [
            ("~", json!(null)),
            ("", json!(null)),
            ("yes", json!(true)),
            ("Off", json!(false)),
            ("y", json!("y")),
            ("12", json!(12)),
            ("-0x1F", json!(-31)),
            ("0b101", json!(5)),
            ("017", json!(15)),
            ("0o17", json!("0o17")),
            ("1_000", json!(1000)),
            ("190:20:30", json!(685230)),
            ("1.5", json!(1.5)),
            ("1.", json!(1.0)),
            (".5", json!(0.5)),
            ("-1.5e+3", json!(-1500.0)),
            ("1e3", json!("1e3")),
            ("1.0e3", json!("1.0e3")),
            ("18446744073709551615", json!(u64::MAX)),
            (
                "2026-01-02",
                json!({"__type__": "date", "__value__": "2026-01-02"}),
            ),
            ("2026-1-2", json!("2026-1-2")),
            (
                "2026-01-02 03:04:05.678901+00:00",
                json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"}),
            ),
            (
                "2026-01-02t03:04:05.5Z",
                json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05.500000+00:00"}),
            ),
            (
                "2026-01-02T03:04:05 -5",
                json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05-05:00"}),
            ),
            (
                "2026-01-02 3:04:05",
                json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05"}),
            ),
            ("'yes'", json!("yes")),
            ("\"12\"", json!("12")),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap(), expected, "{text:?}");
        }
        assert!(load(".inf").unwrap_err().contains("no JSON form"));
        assert!(load("2026-02-30").unwrap_err().contains("not a valid date"));
        assert!(load("99999999999999999999")
            .unwrap_err()
            .contains("64 bits"));
    }

    #[test]
    fn reads_what_pyyaml_safe_dump_writes() {
        // yaml.safe_dump([[2, b"\x00\x01binary"], {"k": "\u00e9", 1: None, "d": date(2026, 1, 2)}])
        let text =
            "- - 2\n  - !!binary |\n    AAFiaW5hcnk=\n- k: \"\\xE9\"\n  1: null\n  d: 2026-01-02\n";
        let value = load(text).unwrap();
        assert_eq!(
            value,
            json!([[2, {"__type__": "bytes", "__value__": "\u{0}\u{1}binary"}],
                   {"k": "é", "1": null, "d": {"__type__": "date", "__value__": "2026-01-02"}}])
        );
        let keys: Vec<_> = value[1].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["k", "1", "d"]);
    }

    #[test]
    fn anchors_merges_and_tags() {
        let text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n";
        assert_eq!(
            load(text).unwrap(),
            json!({"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3},
                   "list": [{"x": 1, "y": 2}, {"x": 1, "y": 2}]})
        );
        assert_eq!(
            load("!!omap [a: 1, b: 2]").unwrap(),
            json!([["a", 1], ["b", 2]])
        );
        assert_eq!(
            load("[!!str 12, ! 13, !!int '14']").unwrap(),
            json!(["12", "13", 14])
        );
        for (text, expected) in [
            (
                "!!python/object/apply:os.system [ls]",
                "refusing the tag !!python/object/apply:os.system",
            ),
            ("!!set [a, b]", "refusing the tag !!set"),
            ("!custom 1", "refusing the tag !custom"),
            ("&a [*a]", "recursive"),
            ("a: 1\n---\nb: 2\n", "single document"),
            ("[1, 2] : x", "a mapping key of type sequence"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_billion_laughs_is_refused() {
        let mut text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
        for level in 1..10 {
            let prev = format!("*a{}", level - 1);
            text.push_str(&format!(
                "a{level}: &a{level} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let err = load(&text).unwrap_err();
        assert!(err.contains("aliases expand it"), "{err}");

        // A long text repeated by aliases costs its length each time, not one value.
        let text = format!(
            "a: &a {}\nb: [{}]\n",
            "x".repeat(1 << 18),
            ["*a"; 60_000].join(", ")
        );
        let err = load(&text).unwrap_err();
        assert!(err.contains("aliases expand it"), "{err}");
    }

    #[test]
    fn aliases_cannot_nest_deeper_than_the_limit() {
        // Each anchor nests the previous one 120 levels deeper: 3 of them are 360 levels, which
        // no single level of the text reaches.
        let wrap = |inner: String| format!("{}{inner}{}", "[".repeat(120), "]".repeat(120));
        let mut text = format!("l0: &l0 {}\n", wrap("0".to_owned()));
        for i in 1..3 {
            text.push_str(&format!("l{i}: &l{i} {}\n", wrap(format!("*l{}", i - 1))));
        }
        let err = load(&text).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        // Aliases that stay within the limit read as before.
        let shallow = load("a: &a [[1, 2], {k: v}]\nb: [*a, *a]\n").unwrap();
        assert_eq!(shallow["b"][1], json!([[1, 2], {"k": "v"}]));
    }

    #[test]
    fn writes_flow_yaml_that_reads_back() {
        let value = json!([
            [2, -3, 1.5, 1e16, 1e-5, u64::MAX, true, null],
            {"k\"ey": "h\u{e9}llo \u{2603} \u{1f600}\n\t\u{1}"},
            {"__type__": "bytes", "__value__": "\u{0}\u{1}binary"},
            {"__type__": "base64", "__value__": "/wCA"},
            {"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678901+00:00"},
            {"__type__": "date", "__value__": "2026-01-02"},
            {"__type__": "time", "__value__": "03:04:05"},
            {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            "yes", "12", "", "2026-01-02"
        ]);
        let bytes = Yaml.encode(&value).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.is_ascii());
        assert!(text.contains("1.0e+16, 1.0e-05"), "{text}");
        assert!(text.contains("!!binary \"AAFiaW5hcnk=\""), "{text}");
        assert!(
            text.contains("!!timestamp \"2026-01-02T03:04:05.678901+00:00\""),
            "{text}"
        );
        assert_eq!(Yaml.decode(&bytes).unwrap(), value);
    }
}
