use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use tokio::io::{duplex, AsyncReadExt, DuplexStream};

use super::*;
use crate::relay::processor::postgres::io::Message;

const PLACEHOLDER: &str = "sluice:resolve:env:DB_PASSWORD";

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The server side of SCRAM-SHA-256 (RFC 5802 §3): the client proof and
/// the server signature for `auth_message`.
fn scram_server(
    password: &str,
    salt: &[u8],
    iterations: u32,
    auth_message: &str,
) -> (Vec<u8>, Vec<u8>) {
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations).expect("iterations"),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let client_key = hmac256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let client_signature = hmac256(stored_key.as_ref(), auth_message.as_bytes());
    let proof = client_key
        .iter()
        .zip(&client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = hmac256(&salted, b"Server Key");
    (proof, hmac256(&server_key, auth_message.as_bytes()))
}

/// The helper reproduces RFC 7677's SCRAM-SHA-256 example exactly.
#[test]
fn scram_server_helper_matches_rfc7677() {
    let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let (proof, signature) = scram_server("pencil", &salt, 4096, auth_message);
    assert_eq!(
        B64.encode(proof),
        "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    assert_eq!(
        B64.encode(signature),
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

fn resolve_placeholder(given: &[u8]) -> Result<Option<String>, String> {
    match given {
        g if g == PLACEHOLDER.as_bytes() => Ok(Some("pencil".into())),
        g if g.starts_with(b"sluice:") => Err("credential X is not bound to db:5432".into()),
        _ => Ok(None),
    }
}

async fn next(r: &mut MsgReader<DuplexStream>) -> Message {
    r.message(1 << 20).await.expect("read").expect("a message")
}

async fn send(r: &mut MsgReader<DuplexStream>, bytes: &[u8]) {
    r.io.write_all(bytes).await.expect("write");
}

fn ready_tail() -> Vec<u8> {
    let mut v = wire::authentication(0);
    v.extend(wire::message(b'S', b"server_version\x0016.0\0"));
    v.extend(wire::message(b'K', &[0, 0, 0, 7, 1, 2, 3, 4]));
    v.extend(wire::message(b'Z', b"I"));
    v
}

/// A fake client that answers the password prompt with `password` and
/// then reads everything until the connection closes.
async fn fake_client(mut c: MsgReader<DuplexStream>, password: &str) -> Vec<u8> {
    let prompt = next(&mut c).await;
    assert_eq!((prompt.tag, prompt.body()), (b'R', &3u32.to_be_bytes()[..]));
    send(&mut c, &wire::password_message(password.as_bytes())).await;
    let mut rest = c.buf.to_vec();
    let _ = c.io.read_to_end(&mut rest).await;
    rest
}

/// A full SCRAM-SHA-256 exchange against a server that checks the proof:
/// the placeholder is resolved, the server accepts, the client sees
/// `AuthenticationOk` and the server's parameters, never the secret.
#[tokio::test]
async fn scram_with_a_placeholder() {
    let (client_side, sluice_client) = duplex(1 << 16);
    let (server_side, sluice_upstream) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut s = MsgReader::new(server_side);
        send(&mut s, &wire::message(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0")).await;
        let first = next(&mut s).await;
        let (mech, rest) = wire::cstr(first.body()).unwrap();
        assert_eq!(mech, b"SCRAM-SHA-256");
        let client_first = std::str::from_utf8(&rest[4..]).unwrap().to_owned();
        let bare = client_first
            .strip_prefix("n,,")
            .expect("no channel binding")
            .to_owned();
        let nonce = bare.split("r=").nth(1).unwrap().to_owned();
        let salt = b"0123456789abcdef";
        let server_first = format!("r={nonce}srv,s={},i=4096", B64.encode(salt));
        let mut body = 11u32.to_be_bytes().to_vec();
        body.extend(server_first.as_bytes());
        send(&mut s, &wire::message(b'R', &body)).await;
        let last = next(&mut s).await;
        let client_final = std::str::from_utf8(last.body()).unwrap().to_owned();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let (want, signature) = scram_server("pencil", salt, 4096, &auth_message);
        assert_eq!(B64.decode(proof).unwrap(), want, "the real secret was used");
        let mut body = 12u32.to_be_bytes().to_vec();
        body.extend(format!("v={}", B64.encode(signature)).as_bytes());
        send(&mut s, &wire::message(b'R', &body)).await;
        send(&mut s, &ready_tail()).await;
    });
    let client = tokio::spawn(fake_client(MsgReader::new(client_side), PLACEHOLDER));
    let mut c = MsgReader::new(sluice_client);
    let mut u = MsgReader::new(sluice_upstream);
    authenticate(&mut c, &mut u, "agent", &resolve_placeholder)
        .await
        .expect("authenticated");
    server.await.expect("server checks");
    drop(c);
    let seen = client.await.expect("client");
    assert!(seen.starts_with(&ready_tail()), "{seen:?}");
    assert!(!seen.windows(6).any(|w| w == b"pencil"));
}

/// md5: the known vector of `md5(md5(password || user) || salt)`.
#[tokio::test]
async fn md5_with_a_placeholder() {
    let (client_side, sluice_client) = duplex(1 << 16);
    let (server_side, sluice_upstream) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut s = MsgReader::new(server_side);
        send(
            &mut s,
            &wire::message(b'R', &[0, 0, 0, 5, 0x2a, 0x3d, 0x8f, 0xe0]),
        )
        .await;
        let p = next(&mut s).await;
        assert_eq!(p.body(), b"md562af4dd09bbb41884907a838a3233294\0");
        send(&mut s, &ready_tail()).await;
    });
    let client = tokio::spawn(fake_client(MsgReader::new(client_side), PLACEHOLDER));
    let mut c = MsgReader::new(sluice_client);
    let mut u = MsgReader::new(sluice_upstream);
    let resolve = |g: &[u8]| -> Result<Option<String>, String> {
        assert_eq!(g, PLACEHOLDER.as_bytes());
        Ok(Some("password".into()))
    };
    authenticate(&mut c, &mut u, "md5_user", &resolve)
        .await
        .expect("authenticated");
    server.await.expect("server checks");
    drop(c);
    assert!(client.await.unwrap().starts_with(&ready_tail()));
}

/// A bad server signature, a placeholder bound elsewhere and the
/// upstream's own refusal all end the session before it starts.
#[tokio::test]
async fn failures() {
    // Server signature that does not verify.
    let (client_side, sluice_client) = duplex(1 << 16);
    let (server_side, sluice_upstream) = duplex(1 << 16);
    tokio::spawn(async move {
        let mut s = MsgReader::new(server_side);
        send(&mut s, &wire::message(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0")).await;
        let first = next(&mut s).await;
        let nonce = String::from_utf8_lossy(first.body())
            .split("r=")
            .nth(1)
            .unwrap()
            .to_owned();
        let mut body = 11u32.to_be_bytes().to_vec();
        body.extend(format!("r={nonce}x,s={},i=4096", B64.encode(b"salt")).as_bytes());
        send(&mut s, &wire::message(b'R', &body)).await;
        let _ = next(&mut s).await;
        let mut body = 12u32.to_be_bytes().to_vec();
        body.extend(format!("v={}", B64.encode([0u8; 32])).as_bytes());
        send(&mut s, &wire::message(b'R', &body)).await;
        let _ = s.io.read_to_end(&mut Vec::new()).await;
    });
    tokio::spawn(fake_client(MsgReader::new(client_side), PLACEHOLDER));
    let (mut c, mut u) = (
        MsgReader::new(sluice_client),
        MsgReader::new(sluice_upstream),
    );
    let e = authenticate(&mut c, &mut u, "agent", &resolve_placeholder)
        .await
        .expect_err("bad signature");
    assert!(e.reason.contains("signature"), "{e:?}");

    // A placeholder this endpoint may not use: refused, never sent upstream.
    let (client_side, sluice_client) = duplex(1 << 16);
    let (server_side, sluice_upstream) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut s = MsgReader::new(server_side);
        send(&mut s, &wire::message(b'R', &3u32.to_be_bytes())).await;
        let mut rest = Vec::new();
        let _ = s.io.read_to_end(&mut rest).await;
        rest
    });
    tokio::spawn(fake_client(
        MsgReader::new(client_side),
        "sluice:resolve:env:OTHER",
    ));
    let (mut c, mut u) = (
        MsgReader::new(sluice_client),
        MsgReader::new(sluice_upstream),
    );
    let e = authenticate(&mut c, &mut u, "agent", &resolve_placeholder)
        .await
        .expect_err("placeholder bound elsewhere");
    assert!(e.policy, "{e:?}");
    let reply = String::from_utf8_lossy(e.reply.as_deref().unwrap()).into_owned();
    assert!(
        reply.contains("28P01") && reply.contains("not bound"),
        "{reply}"
    );
    drop(u);
    assert!(
        server.await.unwrap().is_empty(),
        "nothing reached the upstream"
    );

    // The upstream refuses: its ErrorResponse is what the client gets.
    let (_client_side, sluice_client) = duplex(1 << 16);
    let (server_side, sluice_upstream) = duplex(1 << 16);
    let refusal = wire::error_response(true, "3D000", "database \"x\" does not exist");
    let sent = refusal.clone();
    tokio::spawn(async move {
        let mut s = MsgReader::new(server_side);
        send(&mut s, &sent).await;
        let _ = s.io.read_to_end(&mut Vec::new()).await;
    });
    let (mut c, mut u) = (
        MsgReader::new(sluice_client),
        MsgReader::new(sluice_upstream),
    );
    let e = authenticate(&mut c, &mut u, "agent", &resolve_placeholder)
        .await
        .expect_err("refused");
    assert_eq!(e.reply, Some(refusal));
}
