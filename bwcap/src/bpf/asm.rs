//! A few eBPF instructions and a label-resolving assembler: enough for the
//! classifier programs, no toolchain needed.

/// A register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

/// R0: return value and helper results.
pub const R0: Reg = Reg(0);
/// R1: first argument (the context on entry).
pub const R1: Reg = Reg(1);
/// R2: second argument.
pub const R2: Reg = Reg(2);
/// R3: third argument.
pub const R3: Reg = Reg(3);
/// R4: fourth argument.
pub const R4: Reg = Reg(4);
/// R6: callee-saved.
pub const R6: Reg = Reg(6);
/// R7: callee-saved.
pub const R7: Reg = Reg(7);
/// R10: read-only frame pointer.
pub const R10: Reg = Reg(10);

/// Access width of a load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Half,
    /// 4 bytes.
    Word,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::Word => 0x00,
            Size::Half => 0x08,
            Size::Byte => 0x10,
        }
    }
}

// Instruction classes, operations and sources (linux/bpf_common.h, linux/bpf.h).
const CLASS_LDX: u8 = 0x01;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_AND: u8 = 0x50;
const OP_MOV: u8 = 0xb0;
const JMP_JA: u8 = 0x00;
const JMP_JEQ: u8 = 0x10;
const JMP_JGT: u8 = 0x20;
const JMP_JNE: u8 = 0x50;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    /// The 8 bytes the kernel reads (native byte order; the register nibbles
    /// are laid out as the C bit-field is on a little-endian machine).
    pub fn to_bytes(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            self.dst | (self.src << 4)
        } else {
            (self.dst << 4) | self.src
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }
}

/// A jump target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program; jumps name labels that are resolved at the end.
#[derive(Debug, Default)]
pub struct Assembler {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

/// A jump to a label that was never placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("eBPF assembly: a jump to an unplaced label, or a jump too far")]
pub struct AsmError;

impl Assembler {
    /// An empty program.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// A new label, to be placed with [`Assembler::place`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Puts `label` at the next instruction.
    pub fn place(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns.push(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        });
        self
    }

    fn jump(&mut self, code: u8, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(code, dst, R0, 0, imm)
    }

    /// `dst = src` (64 bit).
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(CLASS_ALU64 | OP_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `dst = imm` (sign-extended to 64 bit).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(CLASS_ALU64 | OP_MOV | SRC_K, dst, R0, 0, imm)
    }

    /// `dst += imm`.
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(CLASS_ALU64 | OP_ADD | SRC_K, dst, R0, 0, imm)
    }

    /// `dst &= imm`.
    pub fn and_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(CLASS_ALU64 | OP_AND | SRC_K, dst, R0, 0, imm)
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) -> &mut Self {
        self.jump(CLASS_JMP | JMP_JA, R0, 0, target)
    }

    /// `if dst == imm goto target`.
    pub fn jeq_imm(&mut self, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(CLASS_JMP | JMP_JEQ | SRC_K, dst, imm, target)
    }

    /// `if dst != imm goto target`.
    pub fn jne_imm(&mut self, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(CLASS_JMP | JMP_JNE | SRC_K, dst, imm, target)
    }

    /// `if dst > imm goto target` (unsigned).
    pub fn jgt_imm(&mut self, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(CLASS_JMP | JMP_JGT | SRC_K, dst, imm, target)
    }

    /// Calls helper number `helper`.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(CLASS_JMP | JMP_CALL, R0, R0, 0, helper)
    }

    /// Returns R0.
    pub fn exit(&mut self) -> &mut Self {
        self.push(CLASS_JMP | JMP_EXIT, R0, R0, 0, 0)
    }

    /// The program with every jump resolved.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for (at, label) in std::mem::take(&mut self.fixups) {
            let target = self
                .labels
                .get(label.0)
                .copied()
                .flatten()
                .ok_or(AsmError)?;
            let offset = target as isize - at as isize - 1;
            self.insns[at].off = i16::try_from(offset).map_err(|_| AsmError)?;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernels_macros() {
        let mut a = Assembler::new();
        let end = a.label();
        a.mov(R6, R1) // BPF_MOV64_REG(R6, R1) = bf 16 00 00 00000000
            .mov_imm(R0, 1) // BPF_MOV64_IMM(R0, 1) = b7 00 .. 01000000
            .load(Size::Word, R0, R6, 16) // BPF_LDX_MEM(BPF_W, R0, R6, 16) = 61 60 1000
            .store(Size::Word, R6, 32, R7) // BPF_STX_MEM(BPF_W, R6, R7, 32) = 63 76 2000
            .jne_imm(R0, 0, end) // BPF_JMP_IMM(BPF_JNE, R0, 0, +1) = 55 00 0100
            .call(26)
            .place(end);
        a.exit();
        let bytes: Vec<[u8; 8]> = a
            .finish()
            .unwrap()
            .into_iter()
            .map(Insn::to_bytes)
            .collect();
        assert_eq!(bytes[0], [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[1], [0xb7, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes[2], [0x61, 0x60, 16, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[3], [0x63, 0x76, 32, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[4], [0x55, 0x00, 1, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[5], [0x85, 0x00, 0, 0, 26, 0, 0, 0]);
        assert_eq!(bytes[6], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unplaced_labels_are_errors() {
        let mut a = Assembler::new();
        let nowhere = a.label();
        a.ja(nowhere);
        assert_eq!(a.finish(), Err(AsmError));
    }
}
