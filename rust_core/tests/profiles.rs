//! Member profiles end to end, without Python: registration with a full profile and
//! custom attributes, updates with their history, search, consumption history and
//! follow-up records.

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use mms_core::core::ManualClock;
use mms_core::member_code::MEMBER_CODE_VALID_MS;
use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{Core, CoreError, Kind, Options};
use prost::Message;

/// 2026-03-01 12:00 in China.
const START_MS: i64 = 1_772_337_600_000;

const REGISTER: &str = "/mms.v1.MemberService/RegisterMember";
const UPDATE: &str = "/mms.v1.MemberService/UpdateMember";
const GET: &str = "/mms.v1.MemberService/GetMember";
const SEARCH: &str = "/mms.v1.MemberService/SearchMembers";
const HISTORY: &str = "/mms.v1.MemberService/ListHistory";
const ADD_FOLLOW_UP: &str = "/mms.v1.MemberService/AddFollowUp";
const FOLLOW_UPS: &str = "/mms.v1.MemberService/ListFollowUps";
const APPLY_CONFIG: &str = "/mms.v1.ConfigService/ApplyConfig";
const RECHARGE: &str = "/mms.v1.TransactionService/Recharge";
const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";
const ISSUE_CODE: &str = "/mms.v1.MemberService/IssueMemberCode";

fn attribute(code: &str, kind: AttributeType, choices: &[&str]) -> AttributeDefinition {
    AttributeDefinition {
        code: code.into(),
        name: code.into(),
        r#type: kind as i32,
        choices: choices.iter().map(|c| c.to_string()).collect(),
        required: false,
    }
}

fn profile_config() -> MerchantConfig {
    MerchantConfig {
        name: "示例 Demo".into(),
        stores: vec![
            Store { code: "S001".into(), name: "总店".into(), ..Default::default() },
            Store { code: "S002".into(), name: "东区店".into(), ..Default::default() },
        ],
        levels: vec![Level {
            code: "regular".into(),
            name: "普通".into(),
            milli_points_per_yuan: 1000,
            ..Default::default()
        }],
        attributes: vec![
            attribute("note", AttributeType::Text, &[]),
            attribute("height", AttributeType::Number, &[]),
            attribute("since", AttributeType::Date, &[]),
            attribute("size", AttributeType::Choice, &["S", "M", "L"]),
        ],
        ..Default::default()
    }
}

struct Harness {
    core: Core,
    clock: Arc<ManualClock>,
    next_request: u64,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let clock = Arc::new(ManualClock(AtomicI64::new(START_MS)));
        let mut options = Options::new(scratch_dir(name));
        // Durability is not what these tests are about; no fsync keeps them fast.
        options.durable = false;
        options.clock = clock.clone();
        let core = Core::open(options).expect("open");
        let mut harness = Harness { core, clock, next_request: 0 };
        harness.apply_config(profile_config()).unwrap();
        harness
    }

    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }

    fn now_ms(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }

    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + WithRequestId,
    ) -> Result<R, CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn query<R: Message + Default>(&self, method: &str, request: impl Message) -> Result<R, CoreError> {
        let bytes = self.core.query(method, MERCHANT, &request.encode_to_vec())?;
        Ok(R::decode(bytes.as_slice()).expect("response decodes"))
    }

    fn apply_config(&mut self, config: MerchantConfig) -> Result<ApplyConfigResponse, CoreError> {
        self.call(APPLY_CONFIG, ApplyConfigRequest { request_id: String::new(), config: Some(config) })
    }

    fn register(&mut self, request: RegisterMemberRequest) -> Result<Member, CoreError> {
        let response: RegisterMemberResponse = self.call(REGISTER, request)?;
        Ok(response.member.unwrap())
    }

    fn update(&mut self, request: UpdateMemberRequest) -> Result<UpdateMemberResponse, CoreError> {
        self.call(UPDATE, request)
    }

    fn get(&self, key: Key) -> Result<Member, CoreError> {
        let response: GetMemberResponse = self.query(GET, GetMemberRequest { member: by(key) })?;
        Ok(response.member.unwrap())
    }

    fn member_code(&self, key: Key) -> Result<IssueMemberCodeResponse, CoreError> {
        self.query(ISSUE_CODE, IssueMemberCodeRequest { member: by(key) })
    }

    fn search(&self, request: SearchMembersRequest) -> Result<SearchMembersResponse, CoreError> {
        self.query(SEARCH, request)
    }

    fn recharge(&mut self, member_id: u64, amount_fen: i64) -> RechargeResponse {
        let request = RechargeRequest { member: by(Key::MemberId(member_id)), amount_fen, ..Default::default() };
        self.call(RECHARGE, request).unwrap()
    }

    fn checkout(&mut self, member_id: u64, list_amount_fen: i64, store_code: &str) -> CheckoutResponse {
        let request = CheckoutRequest {
            member: by(Key::MemberId(member_id)),
            list_amount_fen,
            tenders: vec![Tender { method: PaymentMethod::StoredValue as i32, take_rest: true, ..Default::default() }],
            store_code: store_code.into(),
            ..Default::default()
        };
        self.call(CHECKOUT, request).unwrap()
    }

    /// Every page of a search, checking each is full but the last.
    fn search_all(&self, mut request: SearchMembersRequest) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        loop {
            let page = self.search(request.clone()).unwrap();
            pages.push(page.members.iter().map(|m| m.member_id).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            assert_eq!(page.members.len(), request.page_size as usize, "only the last page is short");
            request.page_token = page.next_page_token;
        }
    }
}

fn by(key: Key) -> Option<MemberRef> {
    Some(MemberRef { key: Some(key) })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn plain(phone: &str, name: &str) -> RegisterMemberRequest {
    RegisterMemberRequest { phone: phone.into(), name: name.into(), ..Default::default() }
}

fn full_profile() -> Profile {
    Profile {
        gender: Gender::Female as i32,
        birthday: "--02-29".into(),
        anniversary: "2015-10-01".into(),
        address: "  上海市徐汇区漕溪北路 88 号 ".into(),
        occupation: "教师".into(),
        interests: strings(&["瑜伽", " 烘焙 ", "瑜伽", ""]),
        attributes: pairs(&[("note", "  喜欢安静 "), ("height", "-3.75"), ("since", "2020-02-29"), ("size", "M")]),
        groups: strings(&["周边小区"]),
        tags: strings(&["VIP", "新客"]),
    }
}

fn update_request(member: u64, fields: &[&str], profile: Profile) -> UpdateMemberRequest {
    UpdateMemberRequest {
        member: by(Key::MemberId(member)),
        profile: Some(profile),
        fields: strings(fields),
        staff_code: "E01".into(),
        ..Default::default()
    }
}

fn assert_kind<T: std::fmt::Debug>(outcome: Result<T, CoreError>, kind: Kind, what: &str) {
    match outcome {
        Ok(value) => panic!("{what}: expected {kind:?}, got {value:?}"),
        Err(error) => assert_eq!(error.kind, kind, "{what}: {error}"),
    }
}

#[test]
fn a_full_profile_is_checked_cleaned_and_kept() {
    let mut h = Harness::new("full");
    let referrer = h.register(plain("13800000001", "推荐人")).unwrap();
    let request = RegisterMemberRequest {
        card_no: "A1001".into(),
        store_code: "S002".into(),
        profile: Some(full_profile()),
        referrer: by(Key::Qr(h.member_code(Key::MemberId(referrer.member_id)).unwrap().payload)),
        staff_code: "E07".into(),
        ..plain("13800000002", " 欧阳娜娜 ")
    };
    let member = h.register(request).unwrap();
    assert_eq!(member.member_id, 2);
    let shown = h.get(Key::Qr(h.member_code(Key::Phone("13800000002".into())).unwrap().payload)).unwrap();
    assert_eq!(shown, member);
    assert_eq!(shown.name, "欧阳娜娜");
    assert_eq!(shown.gender, Gender::Female as i32);
    assert_eq!((shown.birthday.as_str(), shown.anniversary.as_str()), ("--02-29", "2015-10-01"));
    assert_eq!(shown.address, "上海市徐汇区漕溪北路 88 号");
    assert_eq!(shown.occupation, "教师");
    assert_eq!(shown.interests, strings(&["瑜伽", "烘焙"]));
    assert_eq!(shown.groups, strings(&["周边小区"]));
    assert_eq!(shown.tags, strings(&["VIP", "新客"]));
    assert_eq!(
        shown.attributes,
        pairs(&[("note", "喜欢安静"), ("height", "-3.75"), ("since", "2020-02-29"), ("size", "M")])
    );
    assert_eq!(shown.referrer_member_id, referrer.member_id);
    assert_eq!((shown.store_code.as_str(), shown.staff_code.as_str()), ("S002", "E07"));
    assert_eq!(shown.registered_at_ms, START_MS);
    // The member is found by every kind of reference, and by name.
    assert_eq!(h.get(Key::Phone("13800000002".into())).unwrap().member_id, 2);
    assert_eq!(h.get(Key::CardNo("A1001".into())).unwrap().member_id, 2);
    let found = h.search(SearchMembersRequest { name_prefix: "欧阳".into(), ..Default::default() }).unwrap();
    assert_eq!(found.members, vec![member]);
}

#[test]
fn an_invalid_profile_is_refused_and_writes_nothing() {
    let mut h = Harness::new("invalid");
    h.register(plain("13800000001", "先来的")).unwrap();
    type Edit = Box<dyn Fn(&mut RegisterMemberRequest)>;
    let profile = |edit: fn(&mut Profile)| -> Edit {
        Box::new(move |request: &mut RegisterMemberRequest| edit(request.profile.as_mut().unwrap()))
    };
    let attribute = |code: &'static str, value: String| -> Edit {
        Box::new(move |request: &mut RegisterMemberRequest| {
            request.profile.as_mut().unwrap().attributes.insert(code.into(), value.clone());
        })
    };
    let cases: Vec<(&str, Edit, Kind)> = vec![
        ("gender", profile(|p| p.gender = 9), Kind::MalformedRequest),
        ("birthday day", profile(|p| p.birthday = "1990-02-29".into()), Kind::DateInvalid),
        ("birthday month", profile(|p| p.birthday = "--13-01".into()), Kind::DateInvalid),
        ("birthday shape", profile(|p| p.birthday = "1990/01/01".into()), Kind::DateInvalid),
        ("anniversary without year", profile(|p| p.anniversary = "--05-01".into()), Kind::DateInvalid),
        ("address", profile(|p| p.address = "路".repeat(201)), Kind::TextInvalid),
        ("occupation", profile(|p| p.occupation = "x".repeat(65)), Kind::TextInvalid),
        ("interests", profile(|p| p.interests = (0..33).map(|i| i.to_string()).collect()), Kind::TextInvalid),
        ("tag length", profile(|p| p.tags = vec!["t".repeat(33)]), Kind::TextInvalid),
        ("group control", profile(|p| p.groups = vec!["a\u{1b}b".into()]), Kind::TextInvalid),
        ("unknown attribute", attribute("colour", "red".into()), Kind::FieldUnknown),
        ("text attribute", attribute("note", "字".repeat(257)), Kind::AttributeInvalid),
        ("number attribute", attribute("height", "1.5.2".into()), Kind::AttributeInvalid),
        ("number attribute digits", attribute("height", "1".repeat(19)), Kind::AttributeInvalid),
        ("number attribute float", attribute("height", "1e3".into()), Kind::AttributeInvalid),
        ("date attribute", attribute("since", "2026-02-29".into()), Kind::AttributeInvalid),
        ("choice attribute", attribute("size", "XL".into()), Kind::AttributeInvalid),
        ("staff", Box::new(|r: &mut RegisterMemberRequest| r.staff_code = "张店长".into()), Kind::TextInvalid),
        (
            "referrer phone",
            Box::new(|r: &mut RegisterMemberRequest| r.referrer = by(Key::Phone("13999999999".into()))),
            Kind::ReferrerNotFound,
        ),
        (
            "referrer card",
            Box::new(|r: &mut RegisterMemberRequest| r.referrer = by(Key::CardNo("NOPE01".into()))),
            Kind::ReferrerNotFound,
        ),
        (
            "referrer id",
            Box::new(|r: &mut RegisterMemberRequest| r.referrer = by(Key::MemberId(2))),
            Kind::ReferrerNotFound,
        ),
    ];
    for (what, edit, kind) in cases {
        let mut request = RegisterMemberRequest { profile: Some(full_profile()), ..plain("13800000002", "后来的") };
        edit(&mut request);
        assert_kind(h.register(request), kind, what);
        assert_kind(h.get(Key::MemberId(2)), Kind::MemberNotFound, what);
        assert_kind(h.get(Key::Phone("13800000002".into())), Kind::MemberNotFound, what);
        let by_name = h.search(SearchMembersRequest { name_prefix: "后来".into(), ..Default::default() }).unwrap();
        assert!(by_name.members.is_empty(), "{what}: the name was indexed");
    }
    // Nothing was used up: the next member is number 2, with its e-card.
    let request = RegisterMemberRequest { profile: Some(full_profile()), ..plain("13800000002", "后来的") };
    let member = h.register(request).unwrap();
    assert_eq!((member.member_id, member.card_no.as_str()), (2, "E0000000002"));
}

#[test]
fn required_attributes_and_their_definitions() {
    let mut h = Harness::new("required");
    let mut config = profile_config();
    config.attributes[3].required = true;
    assert_eq!(h.apply_config(config).unwrap().config.unwrap().version, 2);
    assert_kind(h.register(plain("13800000001", "没填尺码")), Kind::AttributeInvalid, "required attribute missing");
    let blank = Profile { attributes: pairs(&[("size", "  ")]), ..Default::default() };
    let request = RegisterMemberRequest { profile: Some(blank), ..plain("13800000001", "空尺码") };
    assert_kind(h.register(request), Kind::AttributeInvalid, "required attribute blank");
    let given = Profile { attributes: pairs(&[("size", "L")]), ..Default::default() };
    let request = RegisterMemberRequest { profile: Some(given), ..plain("13800000001", "填了尺码") };
    assert_eq!(h.register(request).unwrap().member_id, 1);
    // An update sets only the attributes it names, and cannot clear a required one.
    let other = Profile { attributes: pairs(&[("note", "x")]), ..Default::default() };
    let response = h.update(update_request(1, &["attributes"], other)).unwrap();
    assert_eq!(response.member.unwrap().attributes, pairs(&[("note", "x"), ("size", "L")]));
    let cleared = Profile { attributes: pairs(&[("size", " ")]), ..Default::default() };
    assert_kind(h.update(update_request(1, &["attributes"], cleared)), Kind::AttributeInvalid, "update clears size");
    assert_eq!(h.get(Key::MemberId(1)).unwrap().attributes, pairs(&[("note", "x"), ("size", "L")]));

    type Breakage = (&'static str, fn(&mut MerchantConfig));
    let broken: Vec<Breakage> = vec![
        ("twice", |c| c.attributes.push(c.attributes[0].clone())),
        ("no type", |c| c.attributes[0].r#type = AttributeType::Unspecified as i32),
        ("choice without choices", |c| c.attributes[3].choices.clear()),
        ("repeated choice", |c| c.attributes[3].choices.push("S".into())),
        ("choices on text", |c| c.attributes[0].choices.push("a".into())),
        ("bad code", |c| c.attributes[0].code = "备注".into()),
        ("too many", |c| {
            c.attributes = (0..65).map(|i| attribute(&format!("a{i}"), AttributeType::Text, &[])).collect()
        }),
    ];
    for (what, edit) in broken {
        let mut config = profile_config();
        edit(&mut config);
        assert_kind(h.apply_config(config), Kind::ConfigInvalid, what);
    }
    let shown: GetConfigResponse = h.query("/mms.v1.ConfigService/GetConfig", GetConfigRequest {}).unwrap();
    assert_eq!(shown.config.unwrap().version, 2);
}

/// The one change an update made, checked.
fn single_change(response: &UpdateMemberResponse, field: &str, old: &str, new: &str) {
    assert_eq!(response.changes.len(), 1, "{field}: {:?}", response.changes);
    let change = &response.changes[0];
    assert_eq!((change.field.as_str(), change.old_value.as_str(), change.new_value.as_str()), (field, old, new));
    assert_eq!(change.member_id, 1);
    assert_eq!(change.staff_code, "E01");
}

#[test]
fn every_field_updates_with_history() {
    let mut h = Harness::new("update");
    let request = RegisterMemberRequest { profile: Some(full_profile()), ..plain("13800000001", "林一") };
    h.register(request).unwrap();
    let cases: Vec<(&str, Profile, &str, &str)> = vec![
        ("gender", Profile { gender: Gender::Male as i32, ..Default::default() }, "FEMALE", "MALE"),
        ("gender", Profile::default(), "MALE", ""),
        ("birthday", Profile { birthday: "1988-03-04".into(), ..Default::default() }, "--02-29", "1988-03-04"),
        ("anniversary", Profile::default(), "2015-10-01", ""),
        ("address", Profile { address: " 北京 ".into(), ..Default::default() }, "上海市徐汇区漕溪北路 88 号", "北京"),
        ("occupation", Profile { occupation: "医生".into(), ..Default::default() }, "教师", "医生"),
        (
            "interests",
            Profile { interests: strings(&["跑步", "瑜伽"]), ..Default::default() },
            "瑜伽, 烘焙",
            "跑步, 瑜伽",
        ),
        ("groups", Profile { groups: strings(&["A组", "B组"]), ..Default::default() }, "周边小区", "A组, B组"),
        ("tags", Profile { tags: vec![], ..Default::default() }, "VIP, 新客", ""),
        ("attributes", Profile { attributes: pairs(&[("size", "L")]), ..Default::default() }, "M", "L"),
    ];
    for (field, profile, old, new) in cases {
        h.advance(1_000);
        let response = h.update(update_request(1, &[field], profile)).unwrap();
        let shown = if field == "attributes" { "attributes.size" } else { field };
        single_change(&response, shown, old, new);
        assert_eq!(response.changes[0].at_ms, h.now_ms());
        let member = response.member.unwrap();
        assert_eq!(member.updated_at_ms, h.now_ms());
        assert_eq!(h.get(Key::MemberId(1)).unwrap(), member, "{field} was stored");
    }
    let response =
        h.update(UpdateMemberRequest { name: " 林二 ".into(), ..update_request(1, &["name"], Profile::default()) });
    single_change(&response.unwrap(), "name", "林一", "林二");

    // Fields not listed stay as they are, whatever the profile says.
    let before = h.get(Key::MemberId(1)).unwrap();
    let profile = Profile { occupation: "律师".into(), tags: strings(&["ignored"]), ..Default::default() };
    let response = h.update(update_request(1, &["occupation"], profile)).unwrap();
    single_change(&response, "occupation", "医生", "律师");
    assert_eq!(response.member.as_ref().unwrap().tags, before.tags);

    // Setting what is already there changes nothing and records nothing.
    h.advance(1_000);
    let same =
        Profile {
            occupation: "律师".into(), interests: strings(&["跑步", " 瑜伽", "跑步"]), ..Default::default()
        };
    let response = h.update(update_request(1, &["occupation", "interests"], same)).unwrap();
    assert!(response.changes.is_empty());
    assert!(response.member.unwrap().updated_at_ms < h.now_ms());

    // Several fields at once: one change each, in the order listed.
    let profile = Profile { gender: Gender::Other as i32, address: "广州".into(), ..Default::default() };
    let response = h.update(update_request(1, &["address", "gender"], profile)).unwrap();
    let fields: Vec<&str> = response.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["address", "gender"]);

    let after = h.get(Key::MemberId(1)).unwrap();
    let refused: Vec<(&[&str], Profile, Kind)> = vec![
        (&[], Profile::default(), Kind::FieldUnknown),
        (&["balance"], Profile::default(), Kind::FieldUnknown),
        (&["level_code"], Profile::default(), Kind::FieldUnknown),
        (&["tags", "card_no"], Profile { tags: strings(&["x"]), ..Default::default() }, Kind::FieldUnknown),
        (&["birthday"], Profile { birthday: "--02-30".into(), ..Default::default() }, Kind::DateInvalid),
        (
            &["attributes"],
            Profile { attributes: pairs(&[("size", "XS")]), ..Default::default() },
            Kind::AttributeInvalid,
        ),
        (&["name"], Profile::default(), Kind::NameInvalid),
        (&["phone"], Profile::default(), Kind::PhoneMalformed),
    ];
    for (fields, profile, kind) in refused {
        assert_kind(h.update(update_request(1, fields, profile)), kind, &format!("{fields:?}"));
    }
    let mut unknown = update_request(1, &["tags"], Profile::default());
    unknown.member = by(Key::Phone("13999999999".into()));
    assert_kind(h.update(unknown), Kind::MemberNotFound, "unknown member");
    let mut bad_staff = update_request(1, &["tags"], Profile::default());
    bad_staff.staff_code = "E 01".into();
    assert_kind(h.update(bad_staff), Kind::TextInvalid, "staff code");
    let mut no_staff = update_request(1, &["tags"], Profile::default());
    no_staff.staff_code.clear();
    assert_kind(h.update(no_staff), Kind::StaffCodeRequired, "no staff code");
    assert_eq!(h.get(Key::MemberId(1)).unwrap(), after);

    // The history reads back newest first, across pages: 14 changes were recorded.
    let list = |page_token: String| -> ListMemberChangesResponse {
        let request = ListMemberChangesRequest { member: by(Key::MemberId(1)), page_size: 5, page_token };
        h.query("/mms.v1.MemberService/ListMemberChanges", request).unwrap()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(token);
        seen.extend(page.changes.iter().map(|c| (c.seq, c.field.clone())));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 14);
    assert!(seen.windows(2).all(|pair| pair[0].0 > pair[1].0), "newest first: {seen:?}");
    assert_eq!(seen[0].1, "gender");
    assert_eq!(seen.last().unwrap().1, "gender");
}

#[test]
fn a_phone_or_name_change_moves_its_index() {
    let mut h = Harness::new("phone");
    h.register(plain("13800000001", "周一")).unwrap();
    h.register(plain("13800000002", "周二")).unwrap();
    let mut request = update_request(1, &["phone", "name"], Profile::default());
    request.member = by(Key::CardNo("E0000000001".into()));
    (request.phone, request.name) = ("13900000001".into(), "吴一".into());
    let response = h.update(request).unwrap();
    let changes: Vec<_> =
        response.changes.iter().map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str())).collect();
    assert_eq!(changes, [("phone", "13800000001", "13900000001"), ("name", "周一", "吴一")]);
    assert_kind(h.get(Key::Phone("13800000001".into())), Kind::MemberNotFound, "old phone");
    assert_eq!(h.get(Key::Phone("13900000001".into())).unwrap().member_id, 1);
    assert_eq!(h.get(Key::CardNo("E0000000001".into())).unwrap().phone, "13900000001");
    let names = |prefix: &str| -> Vec<u64> {
        let request = SearchMembersRequest { name_prefix: prefix.into(), ..Default::default() };
        h.search(request).unwrap().members.iter().map(|m| m.member_id).collect()
    };
    assert_eq!(names("周"), [2]);
    assert_eq!(names("吴"), [1]);
    let phones = |prefix: &str| -> Vec<u64> {
        let request = SearchMembersRequest { phone_prefix: prefix.into(), ..Default::default() };
        h.search(request).unwrap().members.iter().map(|m| m.member_id).collect()
    };
    assert_eq!(phones("138"), [2]);
    assert_eq!(phones("139"), [1]);

    // Taking another member's phone is refused and changes nothing.
    let mut taken =
        update_request(1, &["phone", "occupation"], Profile { occupation: "x".into(), ..Default::default() });
    taken.phone = "13800000002".into();
    assert_kind(h.update(taken), Kind::PhoneTaken, "taken phone");
    let member = h.get(Key::MemberId(1)).unwrap();
    assert_eq!((member.phone.as_str(), member.occupation.as_str()), ("13900000001", ""));
    assert_eq!(h.get(Key::Phone("13800000002".into())).unwrap().member_id, 2);
    // The freed phone can be registered again.
    assert_eq!(h.register(plain("13800000001", "新周一")).unwrap().member_id, 3);
}

#[test]
fn search_by_name_or_phone_prefix_pages_without_gaps() {
    let mut h = Harness::new("search");
    for index in 0..25u64 {
        // Registered out of phone order, so pages follow the index, not the ids.
        let phone = format!("1370000{:04}", (index * 7) % 25);
        h.register(plain(&phone, &format!("张{}", ["伟", "敏", "静", "磊", "洋"][index as usize % 5]))).unwrap();
    }
    h.register(plain("13700010000", "李雷")).unwrap();
    h.register(plain("13600000000", "张")).unwrap();
    h.register(plain("13600000001", "Zhang Wei")).unwrap();
    h.register(plain("13600000002", "Zhangsan")).unwrap();

    let pages = h.search_all(SearchMembersRequest { name_prefix: "张".into(), page_size: 10, ..Default::default() });
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 6]);
    let ids: Vec<u64> = pages.concat();
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>().len(), ids.len(), "no duplicates");
    let mut expected: Vec<u64> = (1..=25).chain([27]).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "no gaps");
    // Key order: the bare "张" first, then by the next character, then by member id.
    assert_eq!(ids[0], 27);
    let names: Vec<String> = ids.iter().map(|id| h.get(Key::MemberId(*id)).unwrap().name).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");

    let two_chars = h.search(SearchMembersRequest { name_prefix: "张敏".into(), ..Default::default() }).unwrap();
    assert_eq!(two_chars.members.iter().map(|m| m.member_id).collect::<Vec<_>>(), [2, 7, 12, 17, 22]);
    assert!(two_chars.next_page_token.is_empty());
    let latin = h.search(SearchMembersRequest { name_prefix: "Zhang ".into(), ..Default::default() }).unwrap();
    assert_eq!(latin.members.len(), 1);

    let pages =
        h.search_all(SearchMembersRequest { phone_prefix: "1370000".into(), page_size: 10, ..Default::default() });
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let phones: Vec<String> = pages.concat().iter().map(|id| h.get(Key::MemberId(*id)).unwrap().phone).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("1370000{i:04}")).collect();
    assert_eq!(phones, expected, "every phone once, in order");
    // A page that ends exactly at the last match has no next page.
    let exact = h.search(SearchMembersRequest { phone_prefix: "136".into(), page_size: 3, ..Default::default() });
    assert!(exact.unwrap().next_page_token.is_empty());
}

#[test]
fn bad_searches_and_page_tokens_are_refused() {
    let mut h = Harness::new("tokens");
    for index in 0..3 {
        h.register(plain(&format!("1380000000{index}"), &format!("王{index}"))).unwrap();
    }
    let first = h.search(SearchMembersRequest { name_prefix: "王".into(), page_size: 1, ..Default::default() });
    let name_token = first.unwrap().next_page_token;
    let first = h.search(SearchMembersRequest { phone_prefix: "138".into(), page_size: 1, ..Default::default() });
    let phone_token = first.unwrap().next_page_token;
    assert!(!name_token.is_empty() && !phone_token.is_empty());
    let search = |name: &str, phone: &str, page_size: i32, token: &str| {
        let request = SearchMembersRequest {
            name_prefix: name.into(),
            phone_prefix: phone.into(),
            page_size,
            page_token: token.into(),
        };
        h.search(request)
    };
    assert_eq!(search("王", "", 1, &name_token).unwrap().members[0].name, "王1");
    assert_kind(search("", "", 0, ""), Kind::SearchInvalid, "neither");
    assert_kind(search("王", "138", 0, ""), Kind::SearchInvalid, "both");
    assert_kind(search("", "13", 0, ""), Kind::SearchInvalid, "short phone prefix");
    assert_kind(search("", "138x", 0, ""), Kind::SearchInvalid, "phone prefix letters");
    assert_kind(search(&"王".repeat(33), "", 0, ""), Kind::SearchInvalid, "long name prefix");
    assert_kind(search("王", "", 101, ""), Kind::PageSizeInvalid, "page size");
    assert_kind(search("王", "", -1, ""), Kind::PageSizeInvalid, "negative page size");
    assert_kind(search("王", "", 1, "not-hex"), Kind::PageTokenInvalid, "garbage token");
    assert_kind(search("王", "", 1, &phone_token), Kind::PageTokenInvalid, "phone token for a name search");
    assert_kind(search("", "138", 1, &name_token), Kind::PageTokenInvalid, "name token for a phone search");
    assert_kind(search("李", "", 1, &name_token), Kind::PageTokenInvalid, "token of another prefix");
    assert_kind(search("", "139", 1, &phone_token), Kind::PageTokenInvalid, "token of another phone prefix");
}

#[test]
fn history_is_newest_first_across_pages() {
    let mut h = Harness::new("history");
    let member = h.register(RegisterMemberRequest { card_no: "H0001".into(), ..plain("13800000001", "史一") }).unwrap();
    let other = h.register(plain("13800000002", "史二")).unwrap();
    let mut expected = Vec::new(); // (seq, kind, amount, store)
    for (step, amount) in [10_000i64, 20_000, 5_000].into_iter().enumerate() {
        h.advance(60_000);
        let recharged = h.recharge(member.member_id, amount);
        expected.push((recharged.ledger_seq, "RECHARGE", amount, "S001", h.now_ms()));
        h.recharge(other.member_id, 1_000);
        if step < 2 {
            h.advance(60_000);
            let out = h.checkout(member.member_id, 1_234 + step as i64, "S002");
            expected.push((out.ledger_seq, "CHECKOUT", out.amount_due_fen, "S002", h.now_ms()));
        }
    }
    expected.reverse();
    let list = |h: &Harness, page_size: i32, token: &str| -> Result<ListHistoryResponse, CoreError> {
        let request =
            ListHistoryRequest { member: by(Key::Phone("13800000001".into())), page_size, page_token: token.into() };
        h.query(HISTORY, request)
    };
    let mut items = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&h, 2, &token).unwrap();
        pages += 1;
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let seen: Vec<_> =
        items.iter().map(|i| (i.ledger_seq, i.kind.as_str(), i.amount_fen, i.store_code.as_str(), i.at_ms)).collect();
    assert_eq!(seen, expected);
    assert!(items.iter().all(|i| i.card_no == "H0001"));
    let request_ids: HashSet<&str> = items.iter().map(|i| i.request_id.as_str()).collect();
    assert_eq!(request_ids.len(), 5);
    assert_eq!(list(&h, 0, "").unwrap().items.len(), 5, "the default page holds all five");
    // Continuing from any seq lists what is below it.
    let below = list(&h, 10, &expected[1].0.to_string()).unwrap();
    let expected_below: Vec<u64> = expected[2..].iter().map(|e| e.0).collect();
    assert_eq!(below.items.iter().map(|i| i.ledger_seq).collect::<Vec<_>>(), expected_below);

    let fresh = h.register(plain("13800000003", "史三")).unwrap();
    let empty: ListHistoryResponse = h
        .query(HISTORY, ListHistoryRequest { member: by(Key::MemberId(fresh.member_id)), ..Default::default() })
        .unwrap();
    assert!(empty.items.is_empty() && empty.next_page_token.is_empty());
    assert_kind(list(&h, 2, "abc"), Kind::PageTokenInvalid, "letters");
    assert_kind(list(&h, 2, "0"), Kind::PageTokenInvalid, "zero");
    assert_kind(list(&h, 2, "-3"), Kind::PageTokenInvalid, "negative");
    assert_kind(list(&h, 101, ""), Kind::PageSizeInvalid, "page size");
    let unknown = ListHistoryRequest { member: by(Key::MemberId(99)), ..Default::default() };
    assert_kind(h.query::<ListHistoryResponse>(HISTORY, unknown), Kind::MemberNotFound, "unknown member");
}

#[test]
fn follow_ups_are_kept_and_listed_newest_first() {
    let mut h = Harness::new("follow");
    h.register(plain("13800000001", "回访甲")).unwrap();
    h.register(plain("13800000002", "回访乙")).unwrap();
    let add = |h: &mut Harness, member: u64, staff: &str, text: &str| -> Result<AddFollowUpResponse, CoreError> {
        let request = AddFollowUpRequest {
            member: by(Key::MemberId(member)),
            staff_code: staff.into(),
            text: text.into(),
            ..Default::default()
        };
        h.call(ADD_FOLLOW_UP, request)
    };
    let mut added = Vec::new();
    for index in 0..5 {
        h.advance(3_600_000);
        let text = format!("  第{index}次回访：满意\r\n下次推荐新品 ");
        let follow_up = add(&mut h, 1, "E01", &text).unwrap().follow_up.unwrap();
        assert_eq!(follow_up.text, format!("第{index}次回访：满意\n下次推荐新品"));
        assert_eq!((follow_up.at_ms, follow_up.staff_code.as_str()), (h.now_ms(), "E01"));
        added.push(follow_up);
        add(&mut h, 2, "E02", "另一位会员").unwrap();
    }
    added.reverse();
    let list = |h: &Harness, page_size: i32, token: &str| -> ListFollowUpsResponse {
        let request =
            ListFollowUpsRequest { member: by(Key::Phone("13800000001".into())), page_size, page_token: token.into() };
        h.query(FOLLOW_UPS, request).unwrap()
    };
    let (first, second) = (list(&h, 2, ""), list(&h, 2, &list(&h, 2, "").next_page_token));
    let third = list(&h, 2, &second.next_page_token);
    assert!(third.next_page_token.is_empty());
    let listed: Vec<FollowUp> = [first.follow_ups, second.follow_ups, third.follow_ups].concat();
    assert_eq!(listed, added);
    assert!(listed.windows(2).all(|w| w[0].seq > w[1].seq && w[0].at_ms > w[1].at_ms));

    let refused = [
        (1, "E01", "   ", Kind::TextInvalid),
        (1, "E01", "a\u{0}b", Kind::TextInvalid),
        (1, "E01", &"字".repeat(1001), Kind::TextInvalid),
        (1, "E 01", "ok", Kind::TextInvalid),
        (1, "", "ok", Kind::StaffCodeRequired),
        (99, "E01", "ok", Kind::MemberNotFound),
    ];
    for (member, staff, text, kind) in refused {
        assert_kind(add(&mut h, member, staff, text), kind, text);
    }
    assert_eq!(list(&h, 100, "").follow_ups.len(), 5);
    assert!(add(&mut h, 1, "E01", &"字".repeat(1000)).is_ok());
    let request = ListFollowUpsRequest { member: by(Key::MemberId(1)), page_size: 0, page_token: "x".into() };
    assert_kind(h.query::<ListFollowUpsResponse>(FOLLOW_UPS, request), Kind::PageTokenInvalid, "token");
}

#[test]
fn a_retried_update_answers_the_same_and_records_once() {
    let h = Harness::new("retry");
    let mut register = RegisterMemberRequest { profile: Some(full_profile()), ..plain("13800000001", "重试") };
    register.request_id = "reg-1".into();
    let first = h.core.submit(REGISTER, MERCHANT, &register.encode_to_vec()).unwrap();
    // The core re-encodes each request to recognise a retry; with several attributes the
    // map's encoding must come out the same every time.
    let again = h.core.submit(REGISTER, MERCHANT, &register.clone().encode_to_vec()).unwrap();
    assert_eq!(first, again);

    let attributes = pairs(&[("size", "L"), ("height", "175.5"), ("note", "重试"), ("since", "2021-01-01")]);
    let mut request =
        update_request(1, &["attributes", "tags"], Profile { attributes, tags: strings(&["a"]), ..Default::default() });
    request.request_id = "upd-1".into();
    let first = h.core.submit(UPDATE, MERCHANT, &request.encode_to_vec()).unwrap();
    h.advance(1_000);
    let again = h.core.submit(UPDATE, MERCHANT, &request.clone().encode_to_vec()).unwrap();
    assert_eq!(first, again);
    let response = UpdateMemberResponse::decode(first.as_slice()).unwrap();
    assert_eq!(response.changes.len(), 5, "four attributes and the tags");
    assert_eq!(h.get(Key::MemberId(1)).unwrap().updated_at_ms, START_MS);
}

#[test]
fn a_config_cannot_make_stored_members_invalid() {
    let mut h = Harness::new("keep");
    let mut config = profile_config();
    config.stores.push(Store { code: "S003".into(), name: "西区店".into(), ..Default::default() });
    h.apply_config(config.clone()).unwrap();
    let profile = Profile { attributes: pairs(&[("size", "M"), ("height", "170")]), ..Default::default() };
    let request =
        RegisterMemberRequest {
            store_code: "S003".into(), profile: Some(profile), ..plain("13800000001", "老会员")
        };
    h.register(request).unwrap();

    type Change = (&'static str, fn(&mut MerchantConfig), Kind);
    let refused: Vec<Change> = vec![
        ("store removed", |c| drop(c.stores.pop()), Kind::StoreInUse),
        ("attribute removed", |c| drop(c.attributes.remove(0)), Kind::AttributeInUse),
        ("choice to number", |c| c.attributes[3] = attribute("size", AttributeType::Number, &[]), Kind::AttributeInUse),
        ("number to text", |c| c.attributes[1].r#type = AttributeType::Text as i32, Kind::AttributeInUse),
        ("choice dropped", |c| drop(c.attributes[3].choices.remove(1)), Kind::AttributeInUse),
    ];
    for (what, edit, kind) in refused {
        let mut next = config.clone();
        edit(&mut next);
        assert_kind(h.apply_config(next), kind, what);
        let shown: GetConfigResponse = h.query("/mms.v1.ConfigService/GetConfig", GetConfigRequest {}).unwrap();
        assert_eq!(shown.config.unwrap().version, 2, "{what}: nothing applied");
    }

    // What may change: choices added, stores renamed, a new attribute that is required.
    let mut grown = config.clone();
    grown.attributes[3].choices.push("XL".into());
    grown.stores[2].name = "西区旗舰店".into();
    grown.attributes.push(AttributeDefinition { required: true, ..attribute("wedding", AttributeType::Date, &[]) });
    assert_eq!(h.apply_config(grown).unwrap().config.unwrap().version, 3);
    // The member from before keeps what it had and can still be updated, one attribute at a time.
    let update =
        update_request(1, &["attributes"], Profile { attributes: pairs(&[("height", "171")]), ..Default::default() });
    let response = h.update(update).unwrap();
    single_change(&response, "attributes.height", "170", "171");
    assert_eq!(response.member.unwrap().attributes, pairs(&[("height", "171"), ("size", "M")]));
    // A new registration must give the new required attribute.
    let without = Profile { attributes: pairs(&[("size", "XL")]), ..Default::default() };
    let request = RegisterMemberRequest { profile: Some(without.clone()), ..plain("13800000002", "新会员") };
    assert_kind(h.register(request), Kind::AttributeInvalid, "wedding missing");
    let mut with = without;
    with.attributes.insert("wedding".into(), "2020-05-20".into());
    let request = RegisterMemberRequest { profile: Some(with), ..plain("13800000002", "新会员") };
    assert_eq!(h.register(request).unwrap().attributes, pairs(&[("size", "XL"), ("wedding", "2020-05-20")]));
}

#[test]
fn attribute_updates_merge_and_the_history_names_each_one() {
    let mut h = Harness::new("merge");
    let request = RegisterMemberRequest { profile: Some(full_profile()), ..plain("13800000001", "合并") };
    h.register(request).unwrap();
    let given = pairs(&[("size", "L"), ("note", ""), ("since", "2020-02-29"), ("height", "180")]);
    let response = h.update(update_request(1, &["attributes"], Profile { attributes: given, ..Default::default() }));
    let response = response.unwrap();
    let lines: Vec<_> =
        response.changes.iter().map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str())).collect();
    assert_eq!(
        lines,
        [("attributes.height", "-3.75", "180"), ("attributes.note", "喜欢安静", ""), ("attributes.size", "M", "L")]
    );
    let member = h.get(Key::MemberId(1)).unwrap();
    assert_eq!(member.attributes, pairs(&[("height", "180"), ("since", "2020-02-29"), ("size", "L")]));
    // A refused attribute changes none of the others given with it.
    let mixed = pairs(&[("height", "190"), ("size", "XXL")]);
    let refused = h.update(update_request(1, &["attributes"], Profile { attributes: mixed, ..Default::default() }));
    assert_kind(refused, Kind::AttributeInvalid, "bad size");
    assert_eq!(h.get(Key::MemberId(1)).unwrap(), member);
}

#[test]
fn phones_are_kept_and_found_in_one_form_however_typed() {
    let mut h = Harness::new("phones");
    let first = h.register(plain("+86 138-0013-8000", "王五")).unwrap();
    assert_eq!(first.phone, "13800138000");
    assert_kind(h.register(plain("8613800138000", "又一个")), Kind::PhoneTaken, "same phone, other form");
    let referred = RegisterMemberRequest {
        referrer: by(Key::Phone("0086 138 0013 8000".into())),
        ..plain("139 0000 0001", "赵六")
    };
    let second = h.register(referred).unwrap();
    assert_eq!((second.phone.as_str(), second.referrer_member_id), ("13900000001", first.member_id));
    for typed in ["13800138000", "+8613800138000", "138 0013 8000", "86-138-0013-8000"] {
        assert_eq!(h.get(Key::Phone(typed.into())).unwrap().member_id, first.member_id, "{typed}");
    }
    let found = |prefix: &str| -> Vec<u64> {
        let request = SearchMembersRequest { phone_prefix: prefix.into(), ..Default::default() };
        h.search(request).unwrap().members.iter().map(|m| m.member_id).collect()
    };
    assert_eq!(found("+86 139"), [2]);
    assert_eq!(found("1380013"), [1]);
    let mut moved = update_request(2, &["phone"], Profile::default());
    moved.phone = "+86 137 0000 0002".into();
    single_change_of(&h.update(moved).unwrap(), "phone", "13900000001", "13700000002");
    assert_eq!(h.get(Key::Phone("13700000002".into())).unwrap().member_id, 2);
    for bad in ["+852 13800138000", "1380013800", "(+86)13800138000"] {
        assert_kind(h.get(Key::Phone(bad.into())), Kind::PhoneMalformed, bad);
        assert_kind(h.register(plain(bad, "坏号码")), Kind::PhoneMalformed, bad);
    }
}

/// The one change an update of member 2 made.
fn single_change_of(response: &UpdateMemberResponse, field: &str, old: &str, new: &str) {
    let changes: Vec<_> =
        response.changes.iter().map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str())).collect();
    assert_eq!(changes, [(field, old, new)]);
}

#[test]
fn names_are_found_whatever_their_case_or_width() {
    let mut h = Harness::new("folded");
    for (phone, name) in [
        ("13800000001", "Li Lei"),
        ("13800000002", "LI LEI"),
        ("13800000003", "ｌｉ ｌｅｉ"),
        ("13800000004", "Lily"),
        ("13800000005", "李雷"),
    ] {
        h.register(plain(phone, name)).unwrap();
    }
    let found = |h: &Harness, prefix: &str| -> Vec<(u64, String)> {
        let request = SearchMembersRequest { name_prefix: prefix.into(), ..Default::default() };
        h.search(request).unwrap().members.into_iter().map(|m| (m.member_id, m.name)).collect()
    };
    let li_lei = [(1, "Li Lei".to_string()), (2, "LI LEI".to_string()), (3, "ｌｉ ｌｅｉ".to_string())];
    for prefix in ["li l", "LI L", "Li L", "ｌｉ　ｌ", "ＬＩ Ｌ"] {
        assert_eq!(found(&h, prefix), li_lei, "{prefix}");
    }
    assert_eq!(found(&h, "li").len(), 4, "Lily too");
    assert_eq!(found(&h, "李"), [(5, "李雷".to_string())]);
    // Paging through a folded prefix keeps going where it stopped.
    let first =
        h.search(SearchMembersRequest { name_prefix: "LI".into(), page_size: 2, ..Default::default() }).unwrap();
    let request = SearchMembersRequest {
        name_prefix: "ｌｉ".into(),
        page_size: 2,
        page_token: first.next_page_token,
        ..Default::default()
    };
    let rest = h.search(request).unwrap();
    let ids: Vec<u64> = first.members.iter().chain(&rest.members).map(|m| m.member_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    // A renamed member is found by the new name only.
    let mut renamed = update_request(4, &["name"], Profile::default());
    renamed.name = "Ｗａｎｇ Ｆａｎｇ".into();
    h.update(renamed).unwrap();
    assert_eq!(found(&h, "wang"), [(4, "Ｗａｎｇ Ｆａｎｇ".to_string())]);
    assert_eq!(found(&h, "li").len(), 3);
}

#[test]
fn birthdays_and_anniversaries_have_happened() {
    let mut h = Harness::new("dates");
    let on = |birthday: &str, anniversary: &str| Profile {
        birthday: birthday.into(),
        anniversary: anniversary.into(),
        ..Default::default()
    };
    // START_MS is 2026-03-01 in China: today is fine, tomorrow is not, nor before 1900.
    for (birthday, anniversary) in
        [("2099-01-01", ""), ("2026-03-02", ""), ("0001-01-01", ""), ("1899-12-31", ""), ("", "2026-03-02")]
    {
        let request =
            RegisterMemberRequest { profile: Some(on(birthday, anniversary)), ..plain("13800000001", "未来") };
        let error = h.register(request).unwrap_err();
        assert_eq!(error.kind, Kind::DateInvalid, "{birthday} {anniversary}");
        assert!(error.message.contains("from 1900-01-01 to today, 2026-03-01"), "{}", error.message);
        assert_kind(h.get(Key::Phone("13800000001".into())), Kind::MemberNotFound, birthday);
    }
    let request =
        RegisterMemberRequest { profile: Some(on("2026-03-01", "1900-01-01")), ..plain("13800000001", "今天") };
    assert_eq!(h.register(request).unwrap().birthday, "2026-03-01");
    let tomorrow = update_request(1, &["birthday"], on("2026-03-02", ""));
    assert_kind(h.update(tomorrow.clone()), Kind::DateInvalid, "tomorrow");
    assert_eq!(h.get(Key::MemberId(1)).unwrap().birthday, "2026-03-01");
    // The server's clock decides what today is.
    h.advance(24 * 3_600_000);
    single_change(&h.update(tomorrow).unwrap(), "birthday", "2026-03-01", "2026-03-02");
    let without_year = update_request(1, &["birthday"], on("--12-31", ""));
    single_change(&h.update(without_year).unwrap(), "birthday", "2026-03-02", "--12-31");
}

// ---- member codes (会员码) ----

fn pay_by_code(h: &mut Harness, payload: &str, list_amount_fen: i64) -> Result<CheckoutResponse, CoreError> {
    let request = CheckoutRequest {
        member: by(Key::Qr(payload.into())),
        list_amount_fen,
        tenders: vec![Tender { method: PaymentMethod::StoredValue as i32, take_rest: true, ..Default::default() }],
        ..Default::default()
    };
    h.call(CHECKOUT, request)
}

fn balance_of(h: &Harness, member_id: u64) -> i64 {
    let response: GetMemberResponse = h.query(GET, GetMemberRequest { member: by(Key::MemberId(member_id)) }).unwrap();
    let balances = response.balances.unwrap();
    balances.principal_fen + balances.bonus_fen
}

#[test]
fn a_member_code_names_the_card_until_it_expires() {
    let mut h = Harness::new("code");
    let member =
        h.register(RegisterMemberRequest { card_no: "VIP0001".into(), ..plain("13800000001", "码一") }).unwrap();
    h.recharge(member.member_id, 10_000);
    let code = h.member_code(Key::Phone("13800000001".into())).unwrap();
    assert_eq!(code.card_no, "VIP0001");
    assert_eq!(code.expires_at_ms, (START_MS + MEMBER_CODE_VALID_MS) / 1000 * 1000);
    assert!(code.payload.starts_with("MMS2.VIP0001."), "{}", code.payload);
    // What scanners send around it is dropped.
    for scanned in [code.payload.clone(), format!("{}\r\n", code.payload), format!("  {}\n", code.payload)] {
        assert_eq!(h.get(Key::Qr(scanned)).unwrap().member_id, member.member_id);
    }
    h.advance(MEMBER_CODE_VALID_MS - 1_000);
    let paid = pay_by_code(&mut h, &code.payload, 1_000).unwrap();
    assert_eq!(paid.card_no, "VIP0001");
    assert_eq!(balance_of(&h, member.member_id), 9_000);
    // A second past its expiry, it names nobody and pays nothing.
    h.advance(1_001);
    assert_kind(h.get(Key::Qr(code.payload.clone())), Kind::QrExpired, "expired lookup");
    assert_kind(pay_by_code(&mut h, &code.payload, 1_000), Kind::QrExpired, "expired payment");
    assert_eq!(balance_of(&h, member.member_id), 9_000);
    // A fresh code works again.
    let fresh = h.member_code(Key::MemberId(member.member_id)).unwrap();
    assert_ne!(fresh.payload, code.payload);
    assert_eq!(pay_by_code(&mut h, &fresh.payload, 1_000).unwrap().card_no, "VIP0001");
    // The server's clock is corrected back a few seconds: a fresh code still works.
    h.advance(-5_000);
    assert_eq!(h.get(Key::Qr(fresh.payload.clone())).unwrap().member_id, member.member_id);
    // A card that cannot be used gets no code: it would only be refused at the till.
    let loss =
        CardActionRequest { card_no: "VIP0001".into(), action: CardAction::ReportLoss as i32, ..Default::default() };
    let _: CardResponse = h.call("/mms.v1.CardService/ApplyCardAction", loss).unwrap();
    assert_kind(h.member_code(Key::MemberId(member.member_id)), Kind::CardLost, "lost card");
}

#[test]
fn a_forged_or_tampered_member_code_is_refused() {
    let mut h = Harness::new("forged");
    let first = h.register(plain("13800000001", "甲")).unwrap();
    let second = h.register(plain("13800000002", "乙")).unwrap();
    h.recharge(first.member_id, 10_000);
    h.recharge(second.member_id, 10_000);
    let code = h.member_code(Key::MemberId(first.member_id)).unwrap().payload;
    let (head, signature) = code.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}{}", if signature.starts_with('0') { '1' } else { '0' }, &signature[1..]);
    let expiry = head.rsplit_once('.').unwrap().1;
    let later = (expiry.parse::<i64>().unwrap() + 60).to_string();
    let forged = [
        "MMS:E0000000002".to_owned(),                                // the old static form
        "E0000000002".to_owned(),                                    // a card number
        flipped,                                                     // one digit of the signature
        code.replace("E0000000001", "E0000000002"),                  // another member's card
        code.replace(&format!(".{expiry}."), &format!(".{later}.")), // a later expiry
        format!("MMS2.E0000000002.{expiry}.{}", "0".repeat(20)),     // made up
        code.replacen("MMS2.", "MMS3.", 1),
    ];
    for payload in forged {
        assert_kind(h.get(Key::Qr(payload.clone())), Kind::QrInvalid, &payload);
        assert_kind(pay_by_code(&mut h, &payload, 5_000), Kind::QrInvalid, &payload);
    }
    assert_eq!((balance_of(&h, first.member_id), balance_of(&h, second.member_id)), (10_000, 10_000));

    // Another merchant on the same server, with the same e-card numbers, has its own key.
    let config = ApplyConfigRequest { request_id: "other-config".into(), config: Some(profile_config()) };
    h.core.submit(APPLY_CONFIG, "other", &config.encode_to_vec()).unwrap();
    let register = RegisterMemberRequest { request_id: "other-1".into(), ..plain("13800000001", "别家") };
    h.core.submit(REGISTER, "other", &register.encode_to_vec()).unwrap();
    let lookup = GetMemberRequest { member: by(Key::Qr(code.clone())) };
    let error = h.core.query(GET, "other", &lookup.encode_to_vec()).unwrap_err();
    assert_eq!(error.kind, Kind::QrInvalid);
    assert_eq!(h.get(Key::Qr(code)).unwrap().member_id, first.member_id, "still good where it was issued");
    let nobody = h.member_code(Key::Phone("13999999999".into()));
    assert_kind(nobody, Kind::MemberNotFound, "no such member");
}
