//! The PKCS#11 keystore: the KEK is a non-extractable AES-256 secret key object in a token
//! (OASIS PKCS#11 v2.40/3.0; SoftHSM2 in tests and CI), found by its label and `CKA_ID` = the
//! generation (4 bytes, big-endian). Keys are wrapped by `C_Encrypt`/`C_Decrypt` with
//! `CKM_AES_GCM` inside the token (96-bit IV from the OS, 128-bit tag, associated data
//! `key_stream_id‖0‖index`).
//!
//! Inside the token's layer sits an inner AES-256-GCM layer under a key sealed in the keystore
//! file under the master key that only K custodians' shares reconstruct: a stolen token with its PIN opens nothing
//! without the shares, and stolen shares open nothing without the token. Rotation re-wraps only
//! the token's layer (`rewrap`), so a stored key never appears in host memory during rotation.
//!
//! Every token call goes through one session, used under the store's lock (a `Session` is not
//! `Sync`). `C_Initialize` runs once per module per process (contexts are cached), because a
//! second initialisation of the same library fails with CKR_CRYPTOKI_ALREADY_INITIALIZED.
use crate::keystore::{gcm_open_secret, gcm_seal, open_inner, random, reseal_file, KekRecord, KeyWrapper, KeystoreFile};
use crate::{Result, StoreError};
use aes_gcm::{Aes256Gcm, KeyInit};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::Zeroizing;

/// Where the KEK lives: module, token (by label, or slot id) and key label.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub module: String,
    pub token_label: Option<String>,
    pub slot: Option<u64>,
    pub key_label: String,
    /// Where the PIN came from ("environment variable X", "file Y"), for error messages only.
    pub pin_source: String,
}

fn contexts() -> &'static Mutex<HashMap<String, Arc<Pkcs11>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<Pkcs11>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn context(module: &str) -> Result<Arc<Pkcs11>> {
    let mut m = contexts().lock().map_err(|_| StoreError::Custody("PKCS#11 context lock poisoned".into()))?;
    if let Some(c) = m.get(module) {
        return Ok(c.clone());
    }
    if !Path::new(module).exists() {
        return Err(StoreError::Custody(format!(
            "PKCS#11 module {module} does not exist: install the token's library (SoftHSM2: apt-get install softhsm2) \
             or fix custody.pkcs11.module"
        )));
    }
    let p = Pkcs11::new(module).map_err(|e| StoreError::Custody(format!("cannot load PKCS#11 module {module}: {e}")))?;
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(StoreError::Custody(format!("PKCS#11 module {module} failed to initialise: {e}"))),
    }
    let p = Arc::new(p);
    m.insert(module.to_string(), p.clone());
    Ok(p)
}

fn ck(what: &str) -> impl Fn(CkError) -> StoreError + '_ {
    move |e| StoreError::Custody(format!("PKCS#11 {what} failed: {e}"))
}

/// Opens a logged-in read-write session on the configured token.
pub fn open_session(cfg: &TokenConfig, pin: &[u8]) -> Result<(Session, String)> {
    let p = context(&cfg.module)?;
    let slots = p.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
    let mut labels = Vec::new();
    let mut found = None;
    for s in slots {
        let label = p.get_token_info(s).map(|i| i.label().trim_end().to_string()).unwrap_or_default();
        let hit = match (&cfg.token_label, cfg.slot) {
            (Some(l), _) => &label == l,
            (None, Some(id)) => s.id() == id,
            (None, None) => false,
        };
        if hit && found.is_none() {
            found = Some((s, label.clone()));
        }
        labels.push(format!("'{label}' (slot {})", s.id()));
    }
    let want = match (&cfg.token_label, cfg.slot) {
        (Some(l), _) => format!("labelled '{l}'"),
        (None, Some(id)) => format!("in slot {id}"),
        (None, None) => return Err(StoreError::Custody("custody.pkcs11 needs tokenLabel (or slot)".into())),
    };
    let Some((slot, label)) = found else {
        return Err(StoreError::Custody(format!(
            "no PKCS#11 token {want} in module {} (tokens present: {}); initialise one (SoftHSM2: softhsm2-util --init-token \
             --free --label <label> --so-pin ... --pin ...) or fix custody.pkcs11.tokenLabel/slot",
            cfg.module,
            if labels.is_empty() { "none".to_string() } else { labels.join(", ") }
        )));
    };
    let session = p.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    let pin_str = Zeroizing::new(String::from_utf8(pin.to_vec()).map_err(|_| StoreError::Custody("the PKCS#11 PIN is not UTF-8 text".into()))?);
    let auth = AuthPin::new(pin_str.trim_end_matches(['\n', '\r']).to_string().into());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(StoreError::Custody(format!(
                "PKCS#11 login to token '{label}' refused: wrong PIN (from {}); fix the PIN there — the token may lock after \
                 a few more wrong tries",
                cfg.pin_source
            )))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            return Err(StoreError::Custody(format!("PKCS#11 token '{label}' has locked its user PIN: the security officer must reset it")))
        }
        Err(e) => return Err(StoreError::Custody(format!("PKCS#11 login to token '{label}' failed: {e} (PIN from {})", cfg.pin_source))),
    }
    Ok((session, label))
}

fn key_template(label: &str, gen: u32) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(gen.to_be_bytes().to_vec()),
    ]
}

pub fn find_key(s: &Session, label: &str, gen: u32) -> Result<Option<ObjectHandle>> {
    let v = s.find_objects(&key_template(label, gen)).map_err(ck("C_FindObjects"))?;
    Ok(v.into_iter().next())
}

/// Generates generation `gen` of the KEK in the token: AES-256, token object, private,
/// sensitive, never extractable, usable only to encrypt and decrypt.
pub fn generate_key(s: &Session, label: &str, gen: u32) -> Result<ObjectHandle> {
    if find_key(s, label, gen)?.is_some() {
        return Err(StoreError::Custody(format!(
            "the token already holds a key labelled '{label}' with id {gen}: it belongs to another keystore; use another \
             custody.pkcs11.keyLabel or remove that key with the token's tools"
        )));
    }
    let mut t = key_template(label, gen);
    t.extend([
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    s.generate_key(&Mechanism::AesKeyGen, &t).map_err(ck("C_GenerateKey (CKM_AES_KEY_GEN)"))
}

/// Reads back whether a key object is sensitive and non-extractable (tests and start-up check).
pub fn key_is_protected(s: &Session, h: ObjectHandle) -> Result<bool> {
    let a = s.get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable]).map_err(ck("C_GetAttributeValue"))?;
    let (mut sens, mut extr) = (false, true);
    for x in a {
        match x {
            Attribute::Sensitive(b) => sens = b,
            Attribute::Extractable(b) => extr = b,
            _ => {}
        }
    }
    Ok(sens && !extr)
}

/// Reads the CKA_VALUE of a key: must fail for our KEKs (tests show it does).
pub fn try_read_value(s: &Session, h: ObjectHandle) -> Option<Vec<u8>> {
    match s.get_attributes(h, &[AttributeType::Value]) {
        Ok(v) => v.into_iter().find_map(|a| if let Attribute::Value(b) = a { Some(b) } else { None }),
        Err(_) => None,
    }
}

pub struct TokenKeystore {
    session: Session,
    cfg: TokenConfig,
    token: String,
    keys: BTreeMap<u32, ObjectHandle>,
    inner: Aes256Gcm,
    mk: Zeroizing<[u8; 32]>,
    path: PathBuf,
    file: KeystoreFile,
}

impl TokenKeystore {
    /// Opens the token and finds every KEK generation the keystore file lists (`mk` verified
    /// against the file by the caller).
    pub fn open(cfg: &TokenConfig, pin: &[u8], mk: &[u8; 32], path: &Path, file: KeystoreFile) -> Result<TokenKeystore> {
        let (session, token) = open_session(cfg, pin)?;
        let mut keys = BTreeMap::new();
        for k in &file.keks {
            let h = find_key(&session, &cfg.key_label, k.gen)?.ok_or_else(|| {
                StoreError::Custody(format!(
                    "PKCS#11 token '{token}' holds no AES key labelled '{}' with id {} (KEK generation {} of keystore {}): \
                     restore the token from its backup or fix custody.pkcs11.keyLabel; without that key the keys it \
                     wrapped cannot be unwrapped",
                    cfg.key_label,
                    k.gen,
                    k.gen,
                    path.display()
                ))
            })?;
            if !key_is_protected(&session, h)? {
                return Err(StoreError::Custody(format!(
                    "the key '{}' id {} in token '{token}' is extractable or not sensitive: refusing to use it as a KEK",
                    cfg.key_label, k.gen
                )));
            }
            keys.insert(k.gen, h);
        }
        if !keys.contains_key(&file.active) {
            return Err(StoreError::Custody(format!("keystore {} lists no KEK for its active generation {}", path.display(), file.active)));
        }
        let ik = open_inner(&file, mk, path)?;
        let inner = Aes256Gcm::new_from_slice(&ik).map_err(|_| StoreError::Custody("bad inner-layer key".into()))?;
        Ok(TokenKeystore { session, cfg: cfg.clone(), token, keys, inner, mk: Zeroizing::new(*mk), path: path.to_path_buf(), file })
    }

    fn token_encrypt(&self, gen: u32, aad: &[u8], plain: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
        let h = *self.keys.get(&gen).ok_or_else(|| StoreError::Custody(format!("KEK generation {gen} is not in the token")))?;
        let mut iv: [u8; 12] = random()?;
        let p = GcmParams::new(&mut iv, aad, 128.into()).map_err(ck("CK_GCM_PARAMS"))?;
        let ct = self.session.encrypt(&Mechanism::AesGcm(p), h, plain).map_err(ck("C_Encrypt (CKM_AES_GCM)"))?;
        Ok((iv, ct))
    }

    fn token_decrypt(&self, gen: u32, nonce: &[u8], aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let h = *self.keys.get(&gen).ok_or_else(|| StoreError::Crypto(format!("no KEK of generation {gen} in the token")))?;
        let mut iv = nonce.to_vec();
        let p = GcmParams::new(&mut iv, aad, 128.into()).map_err(ck("CK_GCM_PARAMS"))?;
        self.session
            .decrypt(&Mechanism::AesGcm(p), h, ct)
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Crypto("a wrapped key failed to authenticate in the token (wrong KEK or tampered row)".into()))
    }
}

impl KeyWrapper for TokenKeystore {
    fn describe(&self) -> String {
        format!("PKCS#11 token '{}' key '{}' ({})", self.token, self.cfg.key_label, self.cfg.module)
    }
    fn active(&self) -> u32 {
        self.file.active
    }
    fn generations(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }
    fn wrap(&mut self, aad: &[u8], key: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
        let (n, c) = gcm_seal(&self.inner, aad, key)?;
        let mut mid = Zeroizing::new(Vec::with_capacity(12 + c.len()));
        mid.extend_from_slice(&n);
        mid.extend_from_slice(&c);
        self.token_encrypt(self.file.active, aad, &mid)
    }
    fn unwrap(&mut self, gen: u32, nonce: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<crate::secmem::SecretBuf> {
        let mid = self.token_decrypt(gen, nonce, aad, wrapped)?;
        if mid.len() < 12 + 16 {
            return Err(StoreError::Crypto("a wrapped key is too short".into()));
        }
        gcm_open_secret(&self.inner, &mid[..12], aad, &mid[12..])
    }
    fn rewrap(&mut self, gen: u32, nonce: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
        // Only the token's layer changes: the inner layer (under the master key) stays sealed.
        let mid = self.token_decrypt(gen, nonce, aad, wrapped)?;
        self.token_encrypt(self.file.active, aad, &mid)
    }
    fn new_generation(&mut self) -> Result<u32> {
        let gen = self.keys.keys().max().copied().unwrap_or(0) + 1;
        let h = generate_key(&self.session, &self.cfg.key_label, gen)?;
        let mut nf = self.file.clone();
        nf.keks.push(KekRecord { gen, sealed: None });
        nf.active = gen;
        if let Err(e) = nf.save(&self.path) {
            let _ = self.session.destroy_object(h);
            return Err(e);
        }
        self.keys.insert(gen, h);
        self.file = nf;
        Ok(gen)
    }
    fn retire(&mut self, gen: u32) -> Result<()> {
        if gen == self.file.active {
            return Err(StoreError::Invalid("cannot retire the active KEK".into()));
        }
        let mut nf = self.file.clone();
        nf.keks.retain(|k| k.gen != gen);
        nf.save(&self.path)?;
        self.file = nf;
        if let Some(h) = self.keys.remove(&gen) {
            self.session.destroy_object(h).map_err(ck("C_DestroyObject (retired KEK)"))?;
        }
        Ok(())
    }
    fn reseal(&mut self, new_mk: &[u8; 32], set_id: [u8; 8], k: u8, n: u8) -> Result<()> {
        let nf = reseal_file(&self.file, &*self.mk, new_mk, set_id, k, n, &self.path)?;
        nf.save(&self.path)?;
        self.file = nf;
        self.mk = Zeroizing::new(*new_mk);
        Ok(())
    }
}
