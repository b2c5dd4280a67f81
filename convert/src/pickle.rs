//! A restricted unpickler for the `data.pkl` that `torch.save` writes.
//!
//! Nothing is executed: the few globals torch needs for a state dict are
//! recognised by name from an allow-list and turned into plain values, and
//! REDUCE / BINPERSID are interpreted only in the exact shapes torch emits
//! for tensors. Everything else is an error that names the opcode or global.
//!
//! Opcodes: PROTO FRAME STOP MARK, EMPTY_DICT/LIST/TUPLE, TUPLE TUPLE1-3,
//! NONE NEWTRUE NEWFALSE, BININT BININT1 BININT2 LONG1 BINFLOAT,
//! BINUNICODE SHORT_BINUNICODE BINUNICODE8, GLOBAL, BINPUT LONG_BINPUT BINGET
//! LONG_BINGET, APPEND APPENDS SETITEM SETITEMS, BINPERSID REDUCE; plus
//! protocol 4's MEMOIZE and STACK_GLOBAL (same allow-list as GLOBAL), so that
//! `torch.save(..., pickle_protocol=4)` files read too.
//!
//! Resource limits, all relative to the input length: the value stack and
//! memo grow by at most one entry per opcode; values nest at most
//! [`MAX_DEPTH`] deep (so recursive drops cannot overflow the thread stack);
//! and the total size of all values built, counting every copy made by
//! BINGET/BINPUT, is capped by [`cell_budget`] (which stops "billion laughs"
//! style doubling through the memo).

use std::collections::HashMap;
use std::fmt;

/// Values may nest at most this deep.
pub const MAX_DEPTH: usize = 64;

/// Budget of value cells (one per node plus one per 8 bytes of string) that
/// a pickle of `len` bytes may build. The fixture's state-dict pickle uses
/// about one cell per 2 input bytes.
pub fn cell_budget(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(4096)
}

/// Element type of a torch storage, from `torch.*Storage` / `torch.<dtype>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn elem_size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The torch name without the `torch.` prefix.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }

    /// Accepts `float32` / `torch.float32` and torch's aliases
    /// (`float`, `half`).
    pub fn from_torch_name(s: &str) -> Option<DType> {
        match s.strip_prefix("torch.").unwrap_or(s) {
            "float32" | "float" => Some(DType::F32),
            "bfloat16" => Some(DType::BF16),
            "float16" | "half" => Some(DType::F16),
            _ => None,
        }
    }
}

/// A storage named by a persistent id
/// `('storage', torch.<T>Storage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub dtype: DType,
    /// The archive entry `<prefix>data/<key>` holds the bytes.
    pub key: String,
    /// Device the tensor was saved from, e.g. `cpu`; informational.
    pub location: String,
    /// Number of elements; `numel * dtype.elem_size()` is known not to
    /// overflow `usize`.
    pub numel: usize,
}

/// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
/// requires_grad, OrderedDict())`, not yet read from the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub storage_offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
    pub requires_grad: bool,
}

/// The value tree built by [`unpickle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Both `dict` and `collections.OrderedDict`, pairs in stream order.
    /// Duplicate keys are kept as they came (Python would keep the last);
    /// consumers that care reject them.
    Dict(Vec<(Value, Value)>),
    /// `torch.float32` etc.
    DType(DType),
    /// `torch.FloatStorage` etc.: only meaningful inside a persistent id.
    StorageType(DType),
    /// Result of BINPERSID.
    Storage(StorageRef),
    /// Result of REDUCE on `_rebuild_tensor_v2`.
    Tensor(TensorRef),
    /// The global `torch._utils._rebuild_tensor_v2`, before REDUCE.
    RebuildTensorV2,
    /// The global `collections.OrderedDict`, before REDUCE.
    OrderedDictType,
}

impl Value {
    /// Short type name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::DType(_) => "torch dtype",
            Value::StorageType(_) => "torch storage type",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::RebuildTensorV2 => "_rebuild_tensor_v2",
            Value::OrderedDictType => "OrderedDict",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// For a dict: the value of the first pair whose key is the string `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    /// Byte offset of the opcode that failed.
    pub offset: usize,
    pub kind: PickleErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PickleErrorKind {
    /// An opcode outside the supported subset (or not an opcode at all).
    Opcode(u8),
    ForbiddenGlobal {
        module: String,
        name: String,
    },
    UnsupportedProtocol(u8),
    /// The opcode's argument runs past the end of the data.
    Truncated {
        opcode: &'static str,
        needed: u64,
        available: usize,
    },
    /// The data ended without a STOP opcode.
    NoStop,
    MissingMemo(u32),
    /// Re-reading a memoized list/dict would share a mutable object, which a
    /// value tree cannot represent; torch never does it for a state dict.
    SharedMutable(u32),
    StackUnderflow(&'static str),
    NoMark(&'static str),
    WrongType {
        opcode: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    OddSetItems,
    IntTooLarge {
        bytes: usize,
    },
    NotUtf8(&'static str),
    BadReduce(String),
    BadPersistentId(String),
    TooDeep,
    TooLarge {
        budget: usize,
    },
    /// STOP with more or less than one value on the stack, or an open MARK.
    BadStop {
        stack: usize,
        marks: usize,
    },
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PickleErrorKind::*;
        write!(f, "pickle: at byte {}: ", self.offset)?;
        match &self.kind {
            Opcode(op) => match opcode_name(*op) {
                Some(name) => write!(f, "opcode 0x{op:02x} ({name}) is not allowed"),
                None => write!(f, "unknown opcode 0x{op:02x}"),
            },
            ForbiddenGlobal { module, name } => {
                write!(f, "global '{module}.{name}' is not allowed (only torch tensor/storage globals are)")
            }
            UnsupportedProtocol(p) => write!(f, "unsupported pickle protocol {p}"),
            Truncated {
                opcode,
                needed,
                available,
            } => write!(
                f,
                "{opcode} needs {needed} bytes but only {available} remain: data is truncated"
            ),
            NoStop => write!(f, "data ended without a STOP opcode: truncated pickle"),
            MissingMemo(i) => write!(f, "memo index {i} was read before being written"),
            SharedMutable(i) => {
                write!(
                    f,
                    "memo index {i} holds a list/dict; shared mutable objects are not supported"
                )
            }
            StackUnderflow(op) => write!(f, "{op} on an empty stack"),
            NoMark(op) => write!(f, "{op} without a MARK"),
            WrongType {
                opcode,
                expected,
                found,
            } => {
                write!(f, "{opcode} expects a {expected}, found a {found}")
            }
            OddSetItems => write!(f, "SETITEMS with an odd number of items"),
            IntTooLarge { bytes } => write!(f, "LONG1 of {bytes} bytes does not fit in 64 bits"),
            NotUtf8(op) => write!(f, "{op} argument is not valid UTF-8"),
            BadReduce(why) => write!(f, "REDUCE: {why}"),
            BadPersistentId(why) => write!(f, "BINPERSID: {why}"),
            TooDeep => write!(f, "values nest deeper than {MAX_DEPTH}"),
            TooLarge { budget } => write!(
                f,
                "pickle builds more than {budget} value cells (limit relative to its size)"
            ),
            BadStop { stack, marks } => write!(
                f,
                "STOP with {stack} values on the stack and {marks} open MARKs (expected 1 and 0)"
            ),
        }
    }
}

impl std::error::Error for PickleError {}

/// Protocol opcode names, for error messages only.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// The allow-list: (module, name) → the value GLOBAL pushes.
fn allowed_global(module: &str, name: &str) -> Option<Value> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Value::RebuildTensorV2,
        ("collections", "OrderedDict") => Value::OrderedDictType,
        ("torch", "FloatStorage") => Value::StorageType(DType::F32),
        ("torch", "BFloat16Storage") => Value::StorageType(DType::BF16),
        ("torch", "HalfStorage") => Value::StorageType(DType::F16),
        ("torch", "float32") => Value::DType(DType::F32),
        ("torch", "bfloat16") => Value::DType(DType::BF16),
        ("torch", "float16") => Value::DType(DType::F16),
        _ => return None,
    })
}

/// A value with its nesting depth and size in cells, tracked so that limits
/// are checked without walking the tree.
#[derive(Debug, Clone)]
struct Item {
    v: Value,
    depth: usize,
    cells: usize,
}

impl Item {
    fn leaf(v: Value) -> Item {
        let cells = match &v {
            Value::Str(s) => 1 + s.len() / 8,
            _ => 1,
        };
        Item { v, depth: 1, cells }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for errors.
    op_at: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    cells_used: usize,
    budget: usize,
}

/// Unpickles `data` into a value tree, allowing only the opcodes, globals
/// and call shapes of a torch state-dict pickle.
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        cells_used: 0,
        budget: cell_budget(data.len()),
    };
    m.run()
}

impl<'a> Machine<'a> {
    fn err(&self, kind: PickleErrorKind) -> PickleError {
        PickleError {
            offset: self.op_at,
            kind,
        }
    }

    fn take(&mut self, n: u64, opcode: &'static str) -> Result<&'a [u8], PickleError> {
        let available = self.data.len() - self.pos;
        if n > available as u64 {
            return Err(self.err(PickleErrorKind::Truncated {
                opcode,
                needed: n,
                available,
            }));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u8(&mut self, op: &'static str) -> Result<u8, PickleError> {
        Ok(self.take(1, op)?[0])
    }
    fn u16(&mut self, op: &'static str) -> Result<u16, PickleError> {
        let b = self.take(2, op)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, op: &'static str) -> Result<u32, PickleError> {
        let b = self.take(4, op)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, op: &'static str) -> Result<u64, PickleError> {
        let b = self.take(8, op)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self, op: &'static str) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            self.err(PickleErrorKind::Truncated {
                opcode: op,
                needed: rest.len() as u64 + 1,
                available: rest.len(),
            })
        })?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| self.err(PickleErrorKind::NotUtf8(op)))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, len: u64, op: &'static str) -> Result<Value, PickleError> {
        let b = self.take(len, op)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err(PickleErrorKind::NotUtf8(op)))?;
        Ok(Value::Str(s.to_string()))
    }

    fn charge(&mut self, cells: usize) -> Result<(), PickleError> {
        self.cells_used = self.cells_used.saturating_add(cells);
        if self.cells_used > self.budget {
            return Err(self.err(PickleErrorKind::TooLarge {
                budget: self.budget,
            }));
        }
        Ok(())
    }

    fn push(&mut self, item: Item) -> Result<(), PickleError> {
        if item.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        self.stack.push(item);
        Ok(())
    }

    fn push_leaf(&mut self, v: Value) -> Result<(), PickleError> {
        let item = Item::leaf(v);
        self.charge(item.cells)?;
        self.push(item)
    }

    fn pop(&mut self, op: &'static str) -> Result<Item, PickleError> {
        // A MARK below the top protects the items above it from plain pops.
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(PickleErrorKind::StackUnderflow(op)));
        }
        Ok(self.stack.pop().expect("length checked"))
    }

    fn pop_mark(&mut self, op: &'static str) -> Result<Vec<Item>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err(PickleErrorKind::NoMark(op)))?;
        Ok(self.stack.split_off(mark))
    }

    fn top_mut(&mut self, op: &'static str) -> Result<&mut Item, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(PickleErrorKind::StackUnderflow(op)));
        }
        Ok(self.stack.last_mut().expect("length checked"))
    }

    /// Builds a container from items, tracking depth and size.
    fn container(
        &mut self,
        items: Vec<Item>,
        make: fn(Vec<Value>) -> Value,
    ) -> Result<(), PickleError> {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let cells = 1 + items.iter().map(|i| i.cells).sum::<usize>();
        self.charge(1)?;
        let v = make(items.into_iter().map(|i| i.v).collect());
        self.push(Item { v, depth, cells })
    }

    fn tuple_n(&mut self, n: usize, op: &'static str) -> Result<(), PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.err(PickleErrorKind::StackUnderflow(op)));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.container(items, Value::Tuple)
    }

    /// Adds items to the list (APPEND/APPENDS) or dict (SETITEM/SETITEMS)
    /// on top of the stack.
    fn extend_top(&mut self, items: Vec<Item>, op: &'static str) -> Result<(), PickleError> {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let cells: usize = items.iter().map(|i| i.cells).sum();
        let top = self.top_mut(op)?;
        let found = top.v.kind();
        match &mut top.v {
            Value::List(list) if op.starts_with("APPEND") => {
                list.extend(items.into_iter().map(|i| i.v))
            }
            Value::Dict(pairs) if op.starts_with("SETITEM") => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k.v, v.v));
                }
            }
            _ => {
                let expected = if op.starts_with("APPEND") {
                    "list"
                } else {
                    "dict"
                };
                return Err(self.err(PickleErrorKind::WrongType {
                    opcode: op,
                    expected,
                    found,
                }));
            }
        }
        top.depth = top.depth.max(depth);
        top.cells += cells;
        if top.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        Ok(())
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), PickleError> {
        let item = self.top_mut("BINPUT")?.clone();
        self.charge(item.cells)?;
        self.memo.insert(idx, item);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), PickleError> {
        let item = self
            .memo
            .get(&idx)
            .ok_or_else(|| self.err(PickleErrorKind::MissingMemo(idx)))?;
        if matches!(item.v, Value::List(_) | Value::Dict(_)) {
            // Python would share the object, so later APPENDs to either copy
            // would show in both; a copy would silently differ.
            return Err(self.err(PickleErrorKind::SharedMutable(idx)));
        }
        let item = item.clone();
        self.charge(item.cells)?;
        self.push(item)
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        use PickleErrorKind as K;
        while self.pos < self.data.len() {
            self.op_at = self.pos;
            let op = self.data[self.pos];
            self.pos += 1;
            match op {
                0x80 => {
                    let p = self.u8("PROTO")?;
                    if !(2..=5).contains(&p) {
                        return Err(self.err(K::UnsupportedProtocol(p)));
                    }
                }
                0x95 => {
                    // FRAME: a length hint for buffered readers; the opcodes
                    // that follow are read as usual.
                    let n = self.u64("FRAME")?;
                    let available = self.data.len() - self.pos;
                    if n > available as u64 {
                        return Err(self.err(K::Truncated {
                            opcode: "FRAME",
                            needed: n,
                            available,
                        }));
                    }
                }
                b'.' => {
                    if self.stack.len() != 1 || !self.marks.is_empty() {
                        return Err(self.err(K::BadStop {
                            stack: self.stack.len(),
                            marks: self.marks.len(),
                        }));
                    }
                    return Ok(self.stack.pop().expect("length checked").v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32("BININT")? as i32;
                    self.push_leaf(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8("LONG1")? as usize;
                    let b = self.take(n as u64, "LONG1")?;
                    if n > 8 {
                        return Err(self.err(K::IntTooLarge { bytes: n }));
                    }
                    // Little-endian two's complement, sign-extended.
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xFF
                    } else {
                        0
                    };
                    let mut a = [fill; 8];
                    a[..n].copy_from_slice(b);
                    self.push_leaf(Value::Int(i64::from_le_bytes(a)))?
                }
                b'G' => {
                    let b = self.take(8, "BINFLOAT")?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push_leaf(Value::Float(f64::from_be_bytes(a)))?
                }
                b'X' => {
                    let n = self.u32("BINUNICODE")?;
                    let v = self.string(n as u64, "BINUNICODE")?;
                    self.push_leaf(v)?
                }
                0x8c => {
                    let n = self.u8("SHORT_BINUNICODE")?;
                    let v = self.string(n as u64, "SHORT_BINUNICODE")?;
                    self.push_leaf(v)?
                }
                0x8d => {
                    let n = self.u64("BINUNICODE8")?;
                    let v = self.string(n, "BINUNICODE8")?;
                    self.push_leaf(v)?
                }
                b'c' => {
                    let module = self.line("GLOBAL")?;
                    let name = self.line("GLOBAL")?;
                    self.global(module, name)?
                }
                0x93 => {
                    // STACK_GLOBAL: protocol 4's GLOBAL, names from the stack.
                    let name = self.pop("STACK_GLOBAL")?.v;
                    let module = self.pop("STACK_GLOBAL")?.v;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?
                        }
                        _ => {
                            return Err(self.err(K::WrongType {
                                opcode: "STACK_GLOBAL",
                                expected: "str",
                                found: if module.as_str().is_some() {
                                    name.kind()
                                } else {
                                    module.kind()
                                },
                            }))
                        }
                    }
                }
                b'q' => {
                    let i = self.u8("BINPUT")?;
                    self.memo_put(i as u32)?
                }
                b'r' => {
                    let i = self.u32("LONG_BINPUT")?;
                    self.memo_put(i)?
                }
                0x94 => {
                    // MEMOIZE (protocol 4): BINPUT at the next free index.
                    let i = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8("BINGET")?;
                    self.memo_get(i as u32)?
                }
                b'j' => {
                    let i = self.u32("LONG_BINGET")?;
                    self.memo_get(i)?
                }
                b't' => {
                    let items = self.pop_mark("TUPLE")?;
                    self.container(items, Value::Tuple)?
                }
                0x85 => self.tuple_n(1, "TUPLE1")?,
                0x86 => self.tuple_n(2, "TUPLE2")?,
                0x87 => self.tuple_n(3, "TUPLE3")?,
                b'a' => {
                    let v = self.pop("APPEND")?;
                    self.extend_top(vec![v], "APPEND")?
                }
                b'e' => {
                    let items = self.pop_mark("APPENDS")?;
                    self.extend_top(items, "APPENDS")?
                }
                b's' => {
                    let v = self.pop("SETITEM")?;
                    let k = self.pop("SETITEM")?;
                    self.extend_top(vec![k, v], "SETITEM")?
                }
                b'u' => {
                    let items = self.pop_mark("SETITEMS")?;
                    if items.len() % 2 != 0 {
                        return Err(self.err(K::OddSetItems));
                    }
                    self.extend_top(items, "SETITEMS")?
                }
                b'Q' => {
                    let pid = self.pop("BINPERSID")?.v;
                    let storage = self.persistent_id(pid)?;
                    self.push_leaf(Value::Storage(storage))?
                }
                b'R' => {
                    let args = self.pop("REDUCE")?.v;
                    let callable = self.pop("REDUCE")?.v;
                    let v = self.reduce(callable, args)?;
                    self.push_leaf(v)?
                }
                other => return Err(self.err(K::Opcode(other))),
            }
        }
        Err(PickleError {
            offset: self.data.len(),
            kind: K::NoStop,
        })
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match allowed_global(module, name) {
            Some(v) => self.push_leaf(v),
            None => Err(self.err(PickleErrorKind::ForbiddenGlobal {
                module: module.to_string(),
                name: name.to_string(),
            })),
        }
    }

    /// `('storage', <storage type>, key, location, numel)`.
    fn persistent_id(&self, pid: Value) -> Result<StorageRef, PickleError> {
        let bad = |why: String| self.err(PickleErrorKind::BadPersistentId(why));
        let items = match pid {
            Value::Tuple(items) if items.len() == 5 => items,
            other => {
                return Err(bad(format!(
                    "expected ('storage', type, key, location, numel), found a {} {}",
                    other.kind(),
                    match &other {
                        Value::Tuple(t) => format!("of {} items", t.len()),
                        _ => String::new(),
                    }
                )))
            }
        };
        let mut it = items.into_iter();
        let (tag, ty, key, location, numel) = (
            it.next().unwrap_or(Value::None),
            it.next().unwrap_or(Value::None),
            it.next().unwrap_or(Value::None),
            it.next().unwrap_or(Value::None),
            it.next().unwrap_or(Value::None),
        );
        if tag.as_str() != Some("storage") {
            return Err(bad(format!("first item must be 'storage', found {tag:?}")));
        }
        let dtype = match ty {
            Value::StorageType(d) => d,
            other => {
                return Err(bad(format!(
                    "second item must be a storage type, found a {}",
                    other.kind()
                )))
            }
        };
        let (key, location) = match (key, location) {
            (Value::Str(k), Value::Str(l)) => (k, l),
            _ => return Err(bad("key and location must be strings".into())),
        };
        let numel = numel
            .as_int()
            .ok_or_else(|| bad(format!("numel of storage '{key}' is not an int")))?;
        let numel = usize::try_from(numel)
            .ok()
            .filter(|n| n.checked_mul(dtype.elem_size()).is_some())
            .ok_or_else(|| {
                bad(format!(
                    "numel {numel} of storage '{key}' is negative or overflows"
                ))
            })?;
        Ok(StorageRef {
            dtype,
            key,
            location,
            numel,
        })
    }

    fn reduce(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let bad = |why: String| self.err(PickleErrorKind::BadReduce(why));
        let args = match args {
            Value::Tuple(a) => a,
            other => {
                return Err(bad(format!(
                    "arguments must be a tuple, found a {}",
                    other.kind()
                )))
            }
        };
        match callable {
            Value::OrderedDictType if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Value::OrderedDictType => {
                Err(bad("OrderedDict() must be called without arguments".into()))
            }
            Value::RebuildTensorV2 => rebuild_tensor_v2(args).map_err(bad),
            other => Err(bad(format!("calling a {} is not allowed", other.kind()))),
        }
    }
}

fn rebuild_tensor_v2(args: Vec<Value>) -> Result<Value, String> {
    if args.len() != 6 {
        return Err(format!(
            "_rebuild_tensor_v2 expects 6 arguments (storage, offset, size, stride, requires_grad, hooks), got {}",
            args.len()
        ));
    }
    let mut it = args.into_iter();
    let storage = match it.next() {
        Some(Value::Storage(s)) => s,
        other => {
            return Err(format!(
                "_rebuild_tensor_v2: argument 1 must be a storage, found {other:?}"
            ))
        }
    };
    let nonneg = |v: &Value, what: &str| -> Result<usize, String> {
        v.as_int()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| {
                format!(
                    "_rebuild_tensor_v2 on storage '{}': {what} must be a non-negative int",
                    storage.key
                )
            })
    };
    let ints = |v: Option<Value>, what: &str| -> Result<Vec<usize>, String> {
        match v {
            Some(Value::Tuple(items)) => items.iter().map(|i| nonneg(i, what)).collect(),
            _ => Err(format!(
                "_rebuild_tensor_v2 on storage '{}': {what} must be a tuple",
                storage.key
            )),
        }
    };
    let storage_offset = nonneg(&it.next().unwrap_or(Value::None), "storage offset")?;
    let size = ints(it.next(), "size")?;
    let stride = ints(it.next(), "stride")?;
    let requires_grad = match it.next() {
        Some(Value::Bool(b)) => b,
        _ => {
            return Err(format!(
                "_rebuild_tensor_v2 on storage '{}': requires_grad must be a bool",
                storage.key
            ))
        }
    };
    match it.next() {
        Some(Value::Dict(d)) if d.is_empty() => {}
        _ => {
            return Err(format!(
                "_rebuild_tensor_v2 on storage '{}': backward hooks must be an empty OrderedDict",
                storage.key
            ))
        }
    }
    if size.len() != stride.len() {
        return Err(format!(
            "_rebuild_tensor_v2 on storage '{}': size has {} dims but stride has {}",
            storage.key,
            size.len(),
            stride.len()
        ));
    }
    Ok(Value::Tensor(TensorRef {
        storage,
        storage_offset,
        size,
        stride,
        requires_grad,
    }))
}
