//! Reading an S3 `ListObjectsV2` page (`tacit audit --log-dir URL`): standalone (std only),
//! so the fuzz target `bucket_listing` includes it as it is (`tests/fuzz_checks/mod.rs`).

/// The keys of one S3 `ListObjectsV2` page and its continuation token when it is truncated.
/// A plain scan of `<Key>`, `<IsTruncated>` and `<NextContinuationToken>` (the five XML
/// entities decoded): nothing else of the listing is used, and a page that is not one yields
/// no key.
pub(crate) fn parse_listing(xml: &str) -> (Vec<String>, Option<String>) {
    fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut out = Vec::new();
        let mut rest = xml;
        while let Some(after) = rest.find(&open).and_then(|i| rest.get(i + open.len()..)) {
            let Some((inner, tail)) =
                after.find(&close).and_then(|j| Some((after.get(..j)?, after.get(j + close.len()..)?)))
            else {
                break;
            };
            out.push(inner);
            rest = tail;
        }
        out
    }
    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }
    let keys = elements(xml, "Key").into_iter().map(unescape).collect();
    let truncated = elements(xml, "IsTruncated").first().is_some_and(|t| t.trim() == "true");
    let next =
        if truncated { elements(xml, "NextContinuationToken").first().map(|t| unescape(t)) } else { None };
    (keys, next)
}

/// `s` with everything but unreserved characters percent-encoded (a query value).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod listing_tests {
    #![allow(clippy::unwrap_used)]
    use super::{parse_listing, percent_encode};

    /// An S3 `ListObjectsV2` page (AWS's own shape, entities and all) and the pages that are
    /// not one.
    #[test]
    fn bucket_listings_are_read_and_junk_yields_nothing() {
        let page = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>log</Name><Prefix></Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>0/aa/bb</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><Size>10</Size></Contents>
<Contents><Key>1/bb/cc&amp;x</Key><Size>12</Size></Contents>
<NextContinuationToken>1+a/b=</NextContinuationToken></ListBucketResult>"#;
        let (keys, next) = parse_listing(page);
        assert_eq!(keys, ["0/aa/bb", "1/bb/cc&x"]);
        assert_eq!(next.as_deref(), Some("1+a/b="));
        assert_eq!(percent_encode("1+a/b="), "1%2Ba%2Fb%3D");
        let last = page.replace("<IsTruncated>true</IsTruncated>", "<IsTruncated>false</IsTruncated>");
        assert_eq!(parse_listing(&last).1, None);
        for junk in ["", "<Key>", "<Key>unterminated", "<html>not a listing</html>", "</Key><Key>"] {
            assert_eq!(parse_listing(junk), (Vec::new(), None), "{junk:?}");
        }
    }
}
