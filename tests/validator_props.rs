//! Property tests for the input stage: no input makes it panic, generated
//! valid rows validate, normalisation is idempotent, and every record of an
//! arbitrary file gets exactly one verdict.

use kycshare::input::validate::*;
use kycshare::input::{Input, InputOptions, Source, Verdict};
use proptest::prelude::*;

fn valid_email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._+-]{0,20}[a-z0-9]",
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        "[a-z]{2,6}",
    )
        .prop_filter("no double dots", |(l, _, _)| !l.contains(".."))
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn valid_mobile() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        "[0-9]{8,15}",
        prop::collection::vec(prop::sample::select(vec![" ", "-", "(", ")", ""]), 0..4),
    )
        .prop_map(|(plus, digits, seps)| {
            let mut s = String::new();
            if plus {
                s.push('+');
            }
            for (i, c) in digits.chars().enumerate() {
                if let Some(sep) = seps.get(i) {
                    s.push_str(sep);
                }
                s.push(c);
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn field_checks_never_panic(s in any::<String>()) {
        let _ = check_identity_reference(&s);
        let _ = check_email(&s);
        let mut out = String::new();
        let _ = normalize_mobile(&s, &mut out);
        let _ = check_vendor(&s);
        let _ = check_token(&s);
        let _ = check_applicant_id(&s);
    }

    #[test]
    fn generated_valid_fields_validate(
        id in "[A-Za-z0-9-]{1,40}",
        email in valid_email(),
        mobile in valid_mobile(),
        token in "[!-~]{6,1024}",
    ) {
        prop_assert!(check_identity_reference(&id).is_ok());
        prop_assert!(check_email(&email).is_ok(), "{}", email);
        let mut out = String::new();
        prop_assert!(normalize_mobile(&mobile, &mut out).is_ok(), "{}", mobile);
        prop_assert!(check_token(&token).is_ok());
    }

    #[test]
    fn the_email_fast_path_accepts_only_what_the_full_check_accepts(
        s in prop_oneof![valid_email(), "[a-z.@+-]{1,30}", "[ -~]{0,40}", any::<String>()]
    ) {
        if is_plain_email(&s) {
            prop_assert!(check_email_full(&s).is_ok(), "{}", s);
        }
    }

    #[test]
    fn the_fast_body_is_byte_for_byte_serde_json(
        id in prop_oneof!["[ -~]{0,20}", any::<String>()],
        email in prop_oneof![valid_email(), "[ -~]{0,30}", any::<String>()],
        mobile in "[0-9]{0,16}",
        token in prop_oneof!["[!-~]{0,300}", any::<String>()],
    ) {
        let req = kycshare::request::ShareRequest {
            identity_reference: &id,
            email: &email,
            mobile_number: &mobile,
            provider: kycshare::request::Provider { vendor: "sumsub", token: &token },
        };
        let mut fast = Vec::new();
        req.write_body(&mut fast);
        prop_assert_eq!(fast, serde_json::to_vec(&req).unwrap());
    }

    #[test]
    fn mobile_normalisation_is_idempotent(mobile in valid_mobile()) {
        let mut once = String::new();
        normalize_mobile(&mobile, &mut once).unwrap();
        let mut twice = String::new();
        normalize_mobile(&once, &mut twice).unwrap();
        prop_assert_eq!(&once, &twice);
        prop_assert!(once.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn arbitrary_bytes_after_a_header_never_panic_and_every_record_gets_one_verdict(
        body in prop::collection::vec(any::<u8>(), 0..2000),
        delim in prop::sample::select(vec![b',', b';', b'\t']),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let d = delim as char;
        let mut data = format!("identityReference{d}email{d}mobileNumber{d}token\n").into_bytes();
        data.extend_from_slice(&body);
        std::fs::write(&path, &data).unwrap();
        let opts = InputOptions { delimiter: delim, ..InputOptions::default() };
        let mut input = Input::open(&Source::File(path), &opts).unwrap();
        let mut last_record = 0;
        let mut last_line = 0;
        while let Some(item) = input.next_item().unwrap() {
            prop_assert_eq!(item.record, last_record + 1);
            prop_assert!(item.line > last_line);
            last_record = item.record;
            last_line = item.line;
            if let Verdict::Valid(row) = item.verdict {
                prop_assert!(check_identity_reference(row.identity_reference).is_ok());
            }
        }
    }

    #[test]
    fn arbitrary_files_never_panic(data in prop::collection::vec(any::<u8>(), 0..3000)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, &data).unwrap();
        if let Ok(mut input) = Input::open(&Source::File(path), &InputOptions::default()) {
            while let Some(_item) = input.next_item().unwrap() {}
        }
    }
}
