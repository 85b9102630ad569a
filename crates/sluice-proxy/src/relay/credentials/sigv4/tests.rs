//! Published AWS vectors (the SigV4 test suite's `get-vanilla`,
//! `get-vanilla-query-order-key-case`, `post-x-www-form-urlencoded`, and the
//! S3 developer guide's header and presigned examples) and tables.

use super::*;

type Headers = Vec<(String, Vec<u8>)>;

const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";
const S3_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn h(name: &str, value: &str) -> (String, Vec<u8>) {
    (name.to_owned(), value.as_bytes().to_vec())
}

fn names(list: &str) -> Vec<String> {
    list.split(';').map(str::to_owned).collect()
}

fn suite_signer(token: Option<&str>) -> Signer<'_> {
    Signer {
        keys: Keys {
            access_key_id: SUITE_KEY,
            secret_access_key: SUITE_SECRET,
            session_token: token,
        },
        region: "us-east-1",
        service: "service",
        amz_date: SUITE_DATE,
    }
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[test]
fn aws_test_suite_vectors() {
    let form_hash = sha256_hex(b"Param1=value1");
    /// (case, method, origin, headers, signed, payload hash, signature)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Headers,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: &[Case<'_>] = &[
        (
            "get-vanilla",
            "GET",
            "/",
            vec![h("Host", "example.amazonaws.com")],
            "host;x-amz-date",
            EMPTY_SHA256,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/?Param2=value2&Param1=value1",
            vec![h("Host", "example.amazonaws.com")],
            "host;x-amz-date",
            EMPTY_SHA256,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST",
            "/",
            vec![
                h("Content-Type", "application/x-www-form-urlencoded"),
                h("Host", "example.amazonaws.com"),
            ],
            "content-type;host;x-amz-date",
            &form_hash,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
    ];
    for (case, method, origin, headers, signed, payload, want) in cases {
        let fields =
            suite_signer(None).sign_headers(method, origin, headers, &names(signed), payload);
        assert_eq!(field(&fields, "x-amz-date"), Some(SUITE_DATE), "{case}");
        assert_eq!(field(&fields, "x-amz-security-token"), None, "{case}");
        let auth = field(&fields, "authorization").expect("authorization");
        assert_eq!(
            auth,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={want}"
            ),
            "{case}"
        );
    }
}

#[test]
fn s3_header_example() {
    let signer = Signer {
        keys: Keys {
            access_key_id: S3_KEY,
            secret_access_key: S3_SECRET,
            session_token: None,
        },
        region: "us-east-1",
        service: "s3",
        amz_date: "20130524T000000Z",
    };
    let headers = vec![
        h("Host", "examplebucket.s3.amazonaws.com"),
        h("Range", "bytes=0-9"),
        h("x-amz-content-sha256", EMPTY_SHA256),
    ];
    let fields = signer.sign_headers(
        "GET",
        "/test.txt",
        &headers,
        &names("host;range;x-amz-content-sha256;x-amz-date"),
        EMPTY_SHA256,
    );
    let auth = field(&fields, "authorization").expect("authorization");
    assert!(
        auth.ends_with("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        "{auth}"
    );
}

#[test]
fn s3_presigned_example() {
    let signer = Signer {
        keys: Keys {
            access_key_id: S3_KEY,
            secret_access_key: S3_SECRET,
            session_token: None,
        },
        region: "us-east-1",
        service: "s3",
        amz_date: "20130524T000000Z",
    };
    // What a sandbox client sends: its own (placeholder) key and signature,
    // and a placeholder session token.
    let client = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=sluice%3Aresolve%3Aenv%3AAWS_ACCESS_KEY_ID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Security-Token=sluice%3Aresolve%3Aenv%3AAWS_SESSION_TOKEN&X-Amz-Signature=00";
    let sig = ClientSignature::detect(&[], Some(client)).expect("presigned");
    let ClientSignature::Query {
        scope,
        signed_headers,
        amz_date,
    } = sig
    else {
        panic!("{sig:?}")
    };
    assert_eq!(scope.access_key_id, "sluice:resolve:env:AWS_ACCESS_KEY_ID");
    assert_eq!(amz_date, "20130524T000000Z");
    let headers = vec![h("Host", "examplebucket.s3.amazonaws.com")];
    let q = signer.presign_query("GET", "/test.txt", client, &headers, &signed_headers);
    assert_eq!(
        q,
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
    // With a real session token it is set (and signed), never the placeholder.
    let with_token = Signer {
        keys: Keys {
            session_token: Some("real/token+="),
            ..signer.keys
        },
        ..signer
    };
    let q = with_token.presign_query("GET", "/test.txt", client, &headers, &signed_headers);
    assert!(
        q.contains("&X-Amz-Security-Token=real%2Ftoken%2B%3D&X-Amz-Signature="),
        "{q}"
    );
    assert!(!q.contains("sluice"), "{q}");
    assert_eq!(
        strip_presigned_fields(client),
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    );
    assert_eq!(
        strip_presigned_fields("x-amz-signature=1&a=b&X-Amz-Credential"),
        "a=b"
    );
}

#[test]
fn session_token_is_signed_when_real() {
    let headers = vec![h("Host", "example.amazonaws.com")];
    let fields = suite_signer(Some("tok")).sign_headers(
        "GET",
        "/",
        &headers,
        &names("host;x-amz-date;x-amz-security-token"),
        EMPTY_SHA256,
    );
    assert_eq!(field(&fields, "x-amz-security-token"), Some("tok"));
    let auth = field(&fields, "authorization").unwrap();
    assert!(
        auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
        "{auth}"
    );
    // Without a real token the client's signed name is dropped.
    let fields = suite_signer(None).sign_headers(
        "GET",
        "/",
        &headers,
        &names("host;x-amz-date;x-amz-security-token"),
        EMPTY_SHA256,
    );
    let auth = field(&fields, "authorization").unwrap();
    assert!(auth.contains("SignedHeaders=host;x-amz-date,"), "{auth}");
}

#[test]
fn canonical_uri_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "service", "/"),
        ("/", "service", "/"),
        ("/a/b", "service", "/a/b"),
        ("//example//", "service", "/example/"),
        ("/example/..", "service", "/"),
        ("/./a/./b/../c", "service", "/a/c"),
        ("/a%20b", "service", "/a%2520b"),
        ("/%E1%88%B4", "service", "/%25E1%2588%25B4"),
        ("/-._~", "service", "/-._~"),
        // S3: the wire path as is.
        ("/a%20b", "s3", "/a%20b"),
        ("//x/../y", "s3", "//x/../y"),
        ("", "s3", "/"),
    ];
    for (path, service, want) in cases {
        assert_eq!(canonical_uri(path, service), *want, "{path} {service}");
    }
}

#[test]
fn canonical_query_table() {
    let cases: &[(Option<&str>, &str)] = &[
        (None, ""),
        (Some(""), ""),
        (Some("b=2&a=1"), "a=1&b=2"),
        (Some("a=2&a=1"), "a=1&a=2"),
        (Some("Param1=value1&param1=x"), "Param1=value1&param1=x"),
        (Some("k"), "k="),
        (Some("k=a+b"), "k=a%2Bb"),
        (Some("k=a%20b"), "k=a%20b"),
        (Some("k=a%2fb"), "k=a%2Fb"),
        (Some("k=a/b~"), "k=a%2Fb~"),
        (Some("k=%zz"), "k=%25zz"),
        (Some("list-type=2&prefix="), "list-type=2&prefix="),
    ];
    for (q, want) in cases {
        assert_eq!(canonical_query(*q, false), *want, "{q:?}");
    }
    assert_eq!(canonical_query(Some("X-Amz-Signature=ab&a=1"), true), "a=1");
}

#[test]
fn canonical_header_values() {
    let headers = vec![
        h("My-Header1", "  value1  "),
        h("My-Header1", "a   b   c"),
        h("Host", "example.amazonaws.com"),
    ];
    let (block, signed) = canonical_headers(&headers, &names("my-header1;host;host"));
    assert_eq!(
        String::from_utf8(block).unwrap(),
        "host:example.amazonaws.com\nmy-header1:value1,a b c\n"
    );
    assert_eq!(signed, "host;my-header1");
}

#[test]
fn payload_hash_table() {
    let hash = "a".repeat(64);
    let cases: Vec<(Option<&str>, Result<PayloadHash, SigV4Error>)> = vec![
        (None, Ok(PayloadHash::Missing)),
        (
            Some("UNSIGNED-PAYLOAD"),
            Ok(PayloadHash::FromClient("UNSIGNED-PAYLOAD".into())),
        ),
        (
            Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            Ok(PayloadHash::FromClient(
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER".into(),
            )),
        ),
        (Some(&hash), Ok(PayloadHash::FromClient(hash.clone()))),
        (
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            Err(SigV4Error::Streaming),
        ),
        (
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            Err(SigV4Error::Streaming),
        ),
        (
            Some("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
            Err(SigV4Error::Streaming),
        ),
        (Some("abc"), Err(SigV4Error::PayloadMode)),
    ];
    for (value, want) in cases {
        let headers: Vec<_> = value
            .map(|v| h("X-Amz-Content-SHA256", v))
            .into_iter()
            .collect();
        assert_eq!(payload_hash(&headers), want, "{value:?}");
    }
}

#[test]
fn detect_table() {
    let auth = |v: &str| vec![h("Authorization", v)];
    let ok = "AWS4-HMAC-SHA256 Credential=sluice:resolve:env:AWS_ACCESS_KEY_ID/20240101/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abcd";
    match ClientSignature::detect(&auth(ok), None) {
        Ok(ClientSignature::Header {
            scope,
            signed_headers,
        }) => {
            assert_eq!(scope.access_key_id, "sluice:resolve:env:AWS_ACCESS_KEY_ID");
            assert_eq!(scope.region, "eu-west-1");
            assert_eq!(scope.service, "s3");
            assert_eq!(
                signed_headers,
                names("host;x-amz-content-sha256;x-amz-date")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ClientSignature::detect(&auth("Bearer x"), Some("a=1")),
        Ok(ClientSignature::None)
    );
    assert_eq!(
        ClientSignature::detect(&[], None),
        Ok(ClientSignature::None)
    );
    for bad in [
        "AWS4-HMAC-SHA256 Credential=k/20240101/r/s/aws4_request",
        "AWS4-HMAC-SHA256 Credential=k/2024/r/s/aws4_request, SignedHeaders=host, Signature=x",
        "AWS4-HMAC-SHA256 Credential=20240101/r/s/aws4_request, SignedHeaders=host, Signature=x",
        "AWS4-HMAC-SHA256 Credential=k/20240101/r/s/aws5_request, SignedHeaders=host, Signature=x",
        "AWS4-HMAC-SHA256 Credential=k/20240101/r/s/aws4_request, SignedHeaders=, Signature=x",
        "AWS4-HMAC-SHA256 Credential=k/20240101/r/s/aws4_request, SignedHeaders=host, Bogus=1",
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=k/20240101/r r/s/aws4_request, SignedHeaders=host, Signature=x",
        "AWS4-HMAC-SHA256 Credential=k/2024010x/r/s/aws4_request, SignedHeaders=host, Signature=x",
    ] {
        assert!(
            matches!(
                ClientSignature::detect(&auth(bad), None),
                Err(SigV4Error::Malformed(_))
            ),
            "{bad}"
        );
    }
    let too_many = format!(
        "AWS4-HMAC-SHA256 Credential=k/20240101/r/s/aws4_request, SignedHeaders={}, Signature=x",
        vec!["h"; MAX_SIGNED_HEADERS + 1].join(";")
    );
    assert!(ClientSignature::detect(&auth(&too_many), None).is_err());
    let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20240101%2Fr%2Fs%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-SignedHeaders=host";
    assert_eq!(
        ClientSignature::detect(&auth(ok), Some(presigned)),
        Err(SigV4Error::Ambiguous)
    );
    assert!(matches!(
        ClientSignature::detect(&[], Some(presigned)),
        Ok(ClientSignature::Query { .. })
    ));
    for bad in [
        "X-Amz-Algorithm=AWS4-HMAC-SHA1&X-Amz-Credential=k%2F20240101%2Fr%2Fs%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-SignedHeaders=host",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z&X-Amz-SignedHeaders=host",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20240101%2Fr%2Fs%2Faws4_request&X-Amz-Date=2024&X-Amz-SignedHeaders=host",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20240101%2Fr%2Fs%2Faws4_request&X-Amz-Date=20240101T000000Z",
    ] {
        assert!(ClientSignature::detect(&[], Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn amz_date_and_region_tables() {
    for (secs, want) in [
        (0, "19700101T000000Z"),
        (1_440_938_160, SUITE_DATE),
        (951_782_400, "20000229T000000Z"),
        (4_102_444_799, "20991231T235959Z"),
    ] {
        assert_eq!(amz_date(secs), want, "{secs}");
    }
    let cases: &[(&str, Option<&str>)] = &[
        ("s3.us-west-2.amazonaws.com", Some("us-west-2")),
        ("bucket.s3.eu-central-1.amazonaws.com", Some("eu-central-1")),
        ("s3-ap-southeast-2.amazonaws.com", Some("ap-southeast-2")),
        ("sts.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
        ("bucket.s3.amazonaws.com", None),
        ("s3.test", None),
        ("my-host-1.example", None),
    ];
    for (host, want) in cases {
        assert_eq!(region_from_host(host), *want, "{host}");
    }
}
