use super::*;

#[test]
fn formats_by_extension() {
    assert_eq!(Format::of(Path::new("r.HTML")), Some(Format::Html));
    assert_eq!(Format::of(Path::new("a/b.md")), Some(Format::Markdown));
    assert_eq!(Format::of(Path::new("x.csv")), Some(Format::Csv));
    assert_eq!(Format::of(Path::new("x.pdf")), None);
    assert_eq!(Format::of(Path::new("noext")), None);
}

#[test]
fn labels() {
    // 2026-11-26T17:49:30Z is minute 29_928_589.
    assert_eq!(minute_label(1_795_715_370 / 60, true), "2026-11-26 17:49");
    assert_eq!(minute_label(1_795_715_370 / 60, false), "17:49");
    assert_eq!(
        when(Timestamp(1_795_715_370_123_456)),
        "2026-11-26T17:49:30.123Z"
    );
}
