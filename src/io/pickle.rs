//! A pickle reader that builds data and never runs code.
//!
//! PyTorch's `torch.save` stores the object tree of a checkpoint as a pickle
//! (`data.pkl`). Python's own unpickler imports and calls whatever globals the
//! pickle names, which makes loading an untrusted `.pth` file equivalent to
//! running it. This module interprets the pickle opcodes itself and gives
//! meaning to a small allow-list of globals only: `collections.OrderedDict`,
//! the tensor/parameter rebuild functions of `torch._utils` and the typed
//! storage classes (`torch.FloatStorage`, ...). Every other global becomes an
//! inert [`Value::Refused`] carrying its name; anything "called" with it stays
//! refused. Nothing is imported, called or evaluated, so a refused global
//! only matters if the caller needs the value: the checkpoint reader
//! (`io::pth`) turns a refused value inside the state dict it reads into an
//! error naming the global, and ignores refused values elsewhere (a Lightning
//! checkpoint's hyper-parameters, say).
//!
//! All opcodes of protocols 0 to 5 that build plain data are supported.
//! Opcodes with no data meaning here (the copyreg extension registry,
//! out-of-band buffers) are errors.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// Element type of a torch storage, from its pickled class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 => 8,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }

    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => StorageDtype::F64,
            "FloatStorage" => StorageDtype::F32,
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "LongStorage" => StorageDtype::I64,
            "IntStorage" => StorageDtype::I32,
            "ShortStorage" => StorageDtype::I16,
            "CharStorage" => StorageDtype::I8,
            "ByteStorage" => StorageDtype::U8,
            "BoolStorage" => StorageDtype::Bool,
            _ => return None,
        })
    }
}

/// The globals this reader gives a meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: builds a dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`: a tensor view
    /// of a storage.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter[_with_state]`: an `nn.Parameter`,
    /// read as its tensor.
    RebuildParameter,
    /// `torch.<Type>Storage`: names the element type of a persistent storage.
    Storage(StorageDtype),
}

/// A storage a checkpoint refers to by key (`data/<key>` in the zip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageDtype,
    /// Number of elements the pickle says the storage holds.
    pub numel: i64,
}

/// A tensor as pickled: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// The items of a tuple, list or set.
///
/// Dropping a deeply nested value (a hostile pickle can nest millions of
/// lists in a few megabytes) must not recurse once per level, so `Seq` and
/// [`Dict`] hand their items to an explicit stack when dropped.
#[derive(Debug, Default, Clone)]
pub struct Seq(pub Vec<Value>);

impl std::ops::Deref for Seq {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl Drop for Seq {
    fn drop(&mut self) {
        drop_iteratively(std::mem::take(&mut self.0));
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        let mut items = Vec::with_capacity(self.entries.len() * 2);
        for (k, v) in self.entries.drain(..) {
            items.push(k);
            items.push(v);
        }
        drop_iteratively(items);
    }
}

/// Drops values, unwrapping containers nobody else holds onto a work list
/// instead of recursing.
fn drop_iteratively(mut work: Vec<Value>) {
    while let Some(v) = work.pop() {
        match v {
            Value::Tuple(rc) => {
                if let Ok(mut seq) = Rc::try_unwrap(rc) {
                    work.append(&mut seq.0);
                }
            }
            Value::List(rc) | Value::Set(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    let mut d = cell.into_inner();
                    for (k, v) in d.entries.drain(..) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A dict keeping insertion order; string keys are unique as in Python.
#[derive(Debug, Default)]
pub struct Dict {
    entries: Vec<(Value, Value)>,
    index: HashMap<Rc<str>, usize>,
}

impl Dict {
    fn insert(&mut self, key: Value, value: Value) {
        if let Value::Str(s) = &key {
            if let Some(&i) = self.index.get(s) {
                self.entries[i].1 = value;
                return;
            }
            self.index.insert(s.clone(), self.entries.len());
        }
        self.entries.push((key, value));
    }

    /// Entries in insertion order.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }

    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }
}

/// An unpickled value. Containers are shared (`Rc`) because the pickle memo
/// may refer to one object from several places and mutate it later, as
/// Python does.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits (little-endian two's
    /// complement bytes); never needed for tensors.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Seq>),
    List(Rc<RefCell<Seq>>),
    Dict(Rc<RefCell<Dict>>),
    Set(Rc<RefCell<Seq>>),
    Global(Global),
    /// A global outside the allow-list (its dotted name), or anything built
    /// by "calling" or "instantiating" one.
    Refused(Rc<str>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(Seq(items)))
    }

    /// A short type name for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global(_) => "class or function",
            Value::Refused(_) => "object of a refused class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// The first refused global reachable from this value, looking at most
    /// `depth` containers deep (pickles can be cyclic).
    pub fn find_refused(&self, depth: usize) -> Option<Rc<str>> {
        if depth == 0 {
            return None;
        }
        let many = |items: &[Value]| items.iter().find_map(|v| v.find_refused(depth - 1));
        match self {
            Value::Refused(name) => Some(name.clone()),
            Value::Tuple(items) => many(items),
            Value::List(items) | Value::Set(items) => many(&items.borrow().0),
            Value::Dict(d) => d
                .borrow()
                .entries
                .iter()
                .find_map(|(k, v)| k.find_refused(depth - 1).or_else(|| v.find_refused(depth - 1))),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError(pub String);

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type PResult<T> = Result<T, PickleError>;

fn err<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError(msg.into()))
}

/// Resolves a persistent id (the pickled reference to data stored outside
/// the pickle, a storage in torch's case) to a value.
pub type PersistentLoad<'a> = dyn FnMut(Value) -> PResult<Value> + 'a;

/// Interprets `data` and returns the pickled object.
pub fn unpickle(data: &[u8], persistent_load: &mut PersistentLoad<'_>) -> PResult<Value> {
    Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), persistent_load }.run()
}

struct Machine<'d, 'p, 'f> {
    data: &'d [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    persistent_load: &'p mut PersistentLoad<'f>,
}

/// Maps a `module.name` global to its allowed meaning, or refuses it.
fn resolve_global(module: &str, name: &str) -> Value {
    let global = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameter)
        }
        ("torch", class) => StorageDtype::from_class(class).map(Global::Storage),
        _ => None,
    };
    match global {
        Some(g) => Value::Global(g),
        None => Value::Refused(format!("{module}.{name}").into()),
    }
}

fn as_int(v: &Value, what: &str) -> PResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(*b as i64),
        other => err(format!("{what} is a {}, expected an int", other.type_name())),
    }
}

fn as_int_tuple(v: &Value, what: &str) -> PResult<Vec<i64>> {
    match v {
        Value::Tuple(items) => items.iter().map(|i| as_int(i, what)).collect(),
        Value::List(items) => items.borrow().iter().map(|i| as_int(i, what)).collect(),
        other => err(format!("{what} is a {}, expected a tuple of ints", other.type_name())),
    }
}

/// Applies an allowed callable to its arguments (REDUCE, NEWOBJ).
fn call(func: Value, args: &[Value]) -> PResult<Value> {
    match func {
        Value::Refused(name) => Ok(Value::Refused(name)),
        Value::Global(Global::OrderedDict) => {
            let mut dict = Dict::default();
            if let Some(items) = args.first() {
                let items: Vec<Value> = match items {
                    Value::List(l) => l.borrow().0.clone(),
                    Value::Tuple(t) => t.to_vec(),
                    other => return err(format!("OrderedDict built from a {}", other.type_name())),
                };
                for item in items {
                    match item {
                        Value::Tuple(kv) if kv.len() == 2 => dict.insert(kv[0].clone(), kv[1].clone()),
                        _ => return err("OrderedDict built from something other than pairs"),
                    }
                }
            }
            Ok(Value::Dict(Rc::new(RefCell::new(dict))))
        }
        Value::Global(Global::RebuildTensor) => {
            // (storage, storage_offset, size, stride, requires_grad?, hooks?, metadata?)
            if args.len() < 4 {
                return err(format!("_rebuild_tensor with {} arguments, expected at least 4", args.len()));
            }
            let storage = match &args[0] {
                Value::Storage(s) => s.clone(),
                other => return err(format!("_rebuild_tensor on a {}, expected a storage", other.type_name())),
            };
            let offset = as_int(&args[1], "tensor storage offset")?;
            let size = as_int_tuple(&args[2], "tensor size")?;
            let stride = as_int_tuple(&args[3], "tensor stride")?;
            Ok(Value::Tensor(Rc::new(TensorRef { storage, offset, size, stride })))
        }
        Value::Global(Global::RebuildParameter) => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            Some(Value::Refused(name)) => Ok(Value::Refused(name.clone())),
            Some(other) => err(format!("_rebuild_parameter on a {}, expected a tensor", other.type_name())),
            None => err("_rebuild_parameter without arguments"),
        },
        Value::Global(Global::Storage(_)) => err("a storage class called directly (only persistent storages are read)"),
        other => err(format!("pickle calls a {}, which is not callable", other.type_name())),
    }
}

impl<'d> Machine<'d, '_, '_> {
    fn take(&mut self, n: usize) -> PResult<&'d [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => err(format!("pickle truncated at byte {} (needs {n} more bytes)", self.pos)),
        }
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn le_uint(&mut self, n: usize) -> PResult<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn len_from(&mut self, n: usize) -> PResult<usize> {
        let len = self.le_uint(n)?;
        // A length beyond the data is a truncated or hostile pickle; checking
        // it here avoids huge allocations.
        if len > (self.data.len() - self.pos) as u64 {
            return err(format!("pickle truncated at byte {} (an item claims {len} bytes)", self.pos));
        }
        Ok(len as usize)
    }

    fn line(&mut self) -> PResult<&'d str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return err(format!("pickle truncated at byte {} (unterminated line)", self.pos));
        };
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).or_else(|_| err("pickle text line is not utf-8"))
    }

    fn pop(&mut self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return err(format!("pickle stack underflow at byte {}", self.pos));
        }
        self.stack.pop().ok_or_else(|| PickleError("pickle stack underflow".into()))
    }

    fn top(&mut self) -> PResult<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| PickleError(format!("pickle stack empty at byte {pos}")))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return err(format!("pickle has no MARK before byte {}", self.pos));
        };
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u64) -> PResult<Value> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| PickleError(format!("pickle refers to memo entry {key}, which was never stored")))
    }

    fn memo_put(&mut self, key: u64) -> PResult<()> {
        let v = self.stack.last().cloned().ok_or_else(|| PickleError("pickle memoizes an empty stack".into()))?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn push_int_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.stack.push(Value::Int(0));
        } else if bytes.len() <= 8 {
            let negative = bytes[bytes.len() - 1] & 0x80 != 0;
            let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
            buf[..bytes.len()].copy_from_slice(bytes);
            self.stack.push(Value::Int(i64::from_le_bytes(buf)));
        } else {
            self.stack.push(Value::BigInt(bytes.into()));
        }
    }

    fn append_items(&mut self, items: Vec<Value>) -> PResult<()> {
        match self.top()? {
            Value::List(l) | Value::Set(l) => {
                l.borrow_mut().0.extend(items);
                Ok(())
            }
            Value::Refused(_) => Ok(()),
            other => err(format!("pickle appends to a {}", other.type_name())),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> PResult<()> {
        if items.len() % 2 != 0 {
            return err("pickle SETITEMS with an odd number of items");
        }
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.insert(k, v);
                }
                Ok(())
            }
            Value::Refused(_) => Ok(()),
            other => err(format!("pickle sets items on a {}", other.type_name())),
        }
    }

    fn text_global(&mut self) -> PResult<Value> {
        let module = self.line()?.to_string();
        let name = self.line()?;
        Ok(resolve_global(&module, name))
    }

    fn run(mut self) -> PResult<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                // Framing and protocol: nothing to do.
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return err(format!("pickle protocol {proto} is newer than 5"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    return self.stack.pop().ok_or_else(|| PickleError("pickle ends with an empty stack".into()));
                }
                // Stack manipulation.
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                // Constants and numbers.
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.le_uint(2)?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.len_from(1)?;
                    let b = self.take(n)?;
                    self.push_int_bytes(b);
                }
                0x8b => {
                    let n = self.len_from(4)?;
                    let b = self.take(n)?;
                    self.push_int_bytes(b);
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.trim().parse().or_else(|_| err(format!("bad INT '{s}'")))?),
                    };
                    self.stack.push(v);
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.trim_end_matches('L');
                    match digits.parse::<i64>() {
                        Ok(i) => self.stack.push(Value::Int(i)),
                        Err(_) if digits.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) => {
                            self.stack.push(Value::BigInt(digits.as_bytes().into()))
                        }
                        Err(_) => return err(format!("bad LONG '{line}'")),
                    }
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line.trim().parse().or_else(|_| err(format!("bad FLOAT '{line}'")))?;
                    self.stack.push(Value::Float(v));
                }
                // Strings and bytes.
                b'X' | 0x8c | 0x8d => {
                    let n = self.len_from(match op {
                        b'X' => 4,
                        0x8c => 1,
                        _ => 8,
                    })?;
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b).or_else(|_| err("pickle string is not utf-8"))?;
                    self.stack.push(Value::Str(s.into()));
                }
                b'V' => {
                    let s = self.line()?;
                    self.stack.push(Value::Str(s.into()));
                }
                b'S' => {
                    let s = self.line()?;
                    let unquoted = s
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                        .unwrap_or(s);
                    self.stack.push(Value::Str(unquoted.into()));
                }
                b'T' | b'U' => {
                    let n = self.len_from(if op == b'T' { 4 } else { 1 })?;
                    let b = self.take(n)?;
                    // Python 2 str: text in practice (latin-1 is lossless).
                    self.stack.push(Value::Str(b.iter().map(|&c| c as char).collect::<String>().into()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = self.len_from(match op {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    })?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                // Tuples.
                b')' => self.stack.push(Value::tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::tuple(items));
                }
                // Lists, dicts, sets.
                b']' => self.stack.push(Value::List(Rc::new(RefCell::new(Seq(Vec::new()))))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(Seq(items)))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append_items(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                b'}' => self.stack.push(Value::Dict(Rc::new(RefCell::new(Dict::default())))),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(Dict::default()))));
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                0x8f => self.stack.push(Value::Set(Rc::new(RefCell::new(Seq(Vec::new()))))),
                0x90 => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Set(Rc::new(RefCell::new(Seq(items)))));
                }
                // Globals and object construction: only the allow-list means
                // anything; nothing is ever called.
                b'c' => {
                    let g = self.text_global()?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(resolve_global(&m, &n)),
                        _ => return err("STACK_GLOBAL with non-string names"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let args: Vec<Value> = match args {
                        Value::Tuple(t) => t.to_vec(),
                        Value::Refused(name) => {
                            self.stack.push(Value::Refused(name));
                            continue;
                        }
                        other => return err(format!("REDUCE with {} arguments, expected a tuple", other.type_name())),
                    };
                    let v = call(func, &args)?;
                    self.stack.push(v);
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // keyword arguments
                    }
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args: Vec<Value> = match args {
                        Value::Tuple(t) => t.to_vec(),
                        _ => Vec::new(),
                    };
                    let v = match cls {
                        Value::Global(Global::OrderedDict) => call(cls, &[])?,
                        other => call(other, &args)?,
                    };
                    self.stack.push(v);
                }
                b'i' => {
                    let cls = self.text_global()?;
                    let args = self.pop_mark()?;
                    let v = call(cls, &args)?;
                    self.stack.push(v);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return err("OBJ without a class");
                    }
                    let cls = items.remove(0);
                    let v = call(cls, &items)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        // OrderedDict state holds torch's `_metadata` (module
                        // versions); a parameter's state is its Python
                        // attributes. Neither changes tensor data.
                        Value::Dict(_) | Value::Tensor(_) | Value::Refused(_) => {}
                        other => return err(format!("BUILD on a {}", other.type_name())),
                    }
                }
                // Persistent ids: storages outside the pickle.
                b'Q' => {
                    let pid = self.pop()?;
                    let v = (self.persistent_load)(pid)?;
                    self.stack.push(v);
                }
                b'P' => {
                    let pid = self.line()?;
                    let v = (self.persistent_load)(Value::Str(pid.into()))?;
                    self.stack.push(v);
                }
                // Memo.
                b'h' => {
                    let k = self.u8()? as u64;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.le_uint(4)?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let line = self.line()?;
                    let k = line.trim().parse().or_else(|_| err(format!("bad GET '{line}'")))?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.le_uint(4)?;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let k = line.trim().parse().or_else(|_| err(format!("bad PUT '{line}'")))?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                0x82..=0x84 => return err("pickle uses the copyreg extension registry, which is not supported"),
                0x97 | 0x98 => return err("pickle uses out-of-band buffers, which are not supported"),
                other => return err(format!("unknown pickle opcode 0x{other:02x} at byte {at}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> PResult<Value> {
        unpickle(data, &mut |_| err("no persistent ids here"))
    }

    fn ints(v: &Value) -> Vec<i64> {
        match v {
            Value::Tuple(t) => t.iter().map(|x| as_int(x, "x").unwrap()).collect(),
            Value::List(l) => l.borrow().iter().map(|x| as_int(x, "x").unwrap()).collect(),
            other => panic!("not a sequence: {other:?}"),
        }
    }

    #[test]
    fn binary_integers_and_longs() {
        // (1, 300, -2, LONG1 -1 (1 byte 0xff), LONG1 2**63 (9 bytes), BININT1 7)
        let mut p = vec![0x80, 2, b'(', b'K', 1, b'M', 0x2c, 0x01, b'J', 0xfe, 0xff, 0xff, 0xff, 0x8a, 1, 0xff];
        p.extend([0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        p.extend([b'K', 7, b't', b'.']);
        let v = run(&p).unwrap();
        let Value::Tuple(t) = &v else { panic!() };
        assert_eq!(ints(&Value::tuple(t[..4].to_vec())), vec![1, 300, -2, -1]);
        assert!(matches!(t[4], Value::BigInt(_)));
        assert!(matches!(t[5], Value::Int(7)));
    }

    #[test]
    fn protocol_zero_text_opcodes() {
        let v = run(b"(I01\nI42\nL-5L\nF0.25\nS'abc'\nVxyz\nl.").unwrap();
        let Value::List(l) = v else { panic!() };
        let l = l.borrow();
        assert!(matches!(l[0], Value::Bool(true)));
        assert!(matches!(l[1], Value::Int(42)));
        assert!(matches!(l[2], Value::Int(-5)));
        assert!(matches!(l[3], Value::Float(f) if f == 0.25));
        assert!(matches!(&l[4], Value::Str(s) if &**s == "abc"));
        assert!(matches!(&l[5], Value::Str(s) if &**s == "xyz"));
    }

    #[test]
    fn binfloat_is_big_endian() {
        let mut p = vec![b'G'];
        p.extend(1.5f64.to_be_bytes());
        p.push(b'.');
        assert!(matches!(run(&p).unwrap(), Value::Float(f) if f == 1.5));
    }

    #[test]
    fn memo_shares_mutable_objects() {
        // d = {}; memo[0] = d; d['a'] = 1 (after memoizing); return (d, memo[0])
        let p = b"}q\x00X\x01\x00\x00\x00aK\x01sh\x00\x86.";
        let v = run(p).unwrap();
        let Value::Tuple(t) = v else { panic!() };
        let Value::Dict(d) = &t[1] else { panic!() };
        assert!(matches!(d.borrow().get("a"), Some(Value::Int(1))));
    }

    #[test]
    fn dict_keeps_order_and_last_value() {
        let p = b"}(X\x01\x00\x00\x00bK\x01X\x01\x00\x00\x00aK\x02X\x01\x00\x00\x00bK\x03u.";
        let Value::Dict(d) = run(p).unwrap() else { panic!() };
        let d = d.borrow();
        let keys: Vec<String> = d.entries().iter().map(|(k, _)| format!("{k:?}")).collect();
        assert_eq!(keys.len(), 2);
        assert!(matches!(d.get("b"), Some(Value::Int(3))));
        assert!(keys[0].contains("\"b\""));
    }

    #[test]
    fn unknown_globals_are_inert_and_named() {
        // os.system('x') as pickled by __reduce__: GLOBAL, args, REDUCE.
        let p = b"\x80\x02cposix\nsystem\nX\x01\x00\x00\x00x\x85R.";
        match run(p).unwrap() {
            Value::Refused(name) => assert_eq!(&*name, "posix.system"),
            other => panic!("{other:?}"),
        }
        // STACK_GLOBAL, NEWOBJ and BUILD on a refused class stay refused.
        let p = b"\x80\x04\x8c\x08argparse\x8c\tNamespace\x93)\x81}b.";
        assert!(matches!(run(p).unwrap(), Value::Refused(n) if &*n == "argparse.Namespace"));
        // A refused value inside a container can be found.
        let p = b"(cbuiltins\neval\nl.";
        assert_eq!(run(p).unwrap().find_refused(8).as_deref(), Some("builtins.eval"));
    }

    #[test]
    fn allowed_globals_build_data() {
        let p = b"\x80\x02ccollections\nOrderedDict\n)R.";
        assert!(matches!(run(p).unwrap(), Value::Dict(_)));
        let p = b"ctorch\nFloatStorage\n.";
        assert!(matches!(run(p).unwrap(), Value::Global(Global::Storage(StorageDtype::F32))));
        // A storage class not in the list is refused, not misread.
        let p = b"ctorch\nComplexFloatStorage\n.";
        assert!(matches!(run(p).unwrap(), Value::Refused(_)));
    }

    #[test]
    fn rebuild_tensor_reads_view_geometry() {
        let storage = Rc::new(StorageRef { key: "0".into(), dtype: StorageDtype::F32, numel: 6 });
        let s2 = storage.clone();
        // _rebuild_tensor_v2(persid, 1, (2, 2), (3, 1), False, OrderedDict())
        let p = b"ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x000QK\x01K\x02K\x02\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.";
        let v = unpickle(p, &mut |_| Ok(Value::Storage(s2.clone()))).unwrap();
        let Value::Tensor(t) = v else { panic!() };
        assert_eq!((t.offset, t.size.clone(), t.stride.clone()), (1, vec![2, 2], vec![3, 1]));
        assert_eq!(t.storage, storage);
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_recurses_on_drop() {
        // A million nested lists: ']' n times, then 'a' n-1 times.
        let n = 1_000_000;
        let mut p = vec![b']'; n];
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let v = run(&p).unwrap();
        assert!(matches!(v, Value::List(_)));
        // find_refused stops at its depth limit.
        assert_eq!(v.find_refused(64), None);
        drop(v);
        // Nested 1-tuples: (((None,),),...).
        let mut p = vec![b'N'];
        p.extend(std::iter::repeat_n(0x85, n));
        p.push(b'.');
        assert!(matches!(run(&p).unwrap(), Value::Tuple(_)));
        // Nested dicts: {1: {1: {...}}}.
        let mut p = vec![b'}'];
        for _ in 0..n {
            p.extend(b"K\x01}");
        }
        p.extend(std::iter::repeat_n(b's', n));
        p.push(b'.');
        assert!(matches!(run(&p).unwrap(), Value::Dict(_)));
    }

    #[test]
    fn malformed_pickles_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\x7fabc",
            b"t.",
            b"h\x05.",
            b"0.",
            b"\x82\x01.",
            b"\xfe",
            b"K",
            b"(K\x01u.",
            b"K\x01K\x02s.",
            b"\x80\x09.",
            b"ctorch\nFloatStorage\n)R.",
        ] {
            assert!(run(bad).is_err(), "{bad:?} should fail");
        }
    }
}
