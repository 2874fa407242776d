//! The classifier programs (`BPF_PROG_TYPE_CGROUP_SKB`, attached at
//! `BPF_CGROUP_INET_EGRESS`). Each sets `skb->priority` to an HTB class id;
//! HTB sends a packet whose priority names one of its leaf classes straight
//! to that class, without filters. Every program returns 1 (let the packet
//! pass): they classify, they never drop.
//!
//! - The sliver program (one per sliver, its class id built in) sends ICMP
//!   and ICMPv6 echo requests to the ICMP class and IPv4 packets with
//!   options to the IP-options class, everything else to the sliver's class.
//! - The node program sends everything to one class (the node's own).

use super::asm::{AsmError, Assembler, Insn, Size, R0, R1, R10, R2, R3, R4, R6, R7};

/// `offsetof(struct __sk_buff, protocol)`.
const SKB_PROTOCOL: i16 = 16;
/// `offsetof(struct __sk_buff, priority)`.
const SKB_PRIORITY: i16 = 32;
/// `BPF_FUNC_skb_load_bytes`.
const HELPER_SKB_LOAD_BYTES: i32 = 26;

/// A 16-bit network-order field as a native load of it reads.
const fn be16(v: u16) -> i32 {
    u16::from_ne_bytes(v.to_be_bytes()) as i32
}

/// Bumped whenever the programs' code changes, so that a new bwcap replaces
/// the programs an older one attached (the version is in the name).
pub const PROGRAM_VERSION: u32 = 1;

/// The name prefix of every program bwcap attaches.
pub const NAME_PREFIX: &str = "bwcap";

/// What a program is for, and the class ids built into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Sends a sliver's traffic to `class`, with echo requests and IPv4
    /// options diverted to `icmp` and `ip_options`.
    Sliver {
        /// The sliver's class (`1:<minor>` as one word).
        class: u32,
        /// The ICMP echo class.
        icmp: u32,
        /// The IP-options class.
        ip_options: u32,
    },
    /// Sends everything to `class`.
    Node {
        /// The class.
        class: u32,
    },
}

impl Program {
    /// The kernel-visible name (at most 15 bytes): `bwcap<version>_<kind>_<class minor>`.
    /// bwcap recognises its programs, and whether they are current, by name.
    pub fn name(&self) -> String {
        let (kind, class) = match self {
            Program::Sliver { class, .. } => ('s', *class),
            Program::Node { class } => ('n', *class),
        };
        format!("{NAME_PREFIX}{PROGRAM_VERSION}_{kind}_{:x}", class & 0xffff)
    }

    /// The instructions.
    pub fn instructions(&self) -> Result<Vec<Insn>, AsmError> {
        match *self {
            Program::Node { class } => {
                let mut a = Assembler::new();
                a.mov_imm(R2, class as i32)
                    .store(Size::Word, R1, SKB_PRIORITY, R2)
                    .mov_imm(R0, 1)
                    .exit();
                a.finish()
            }
            Program::Sliver {
                class,
                icmp,
                ip_options,
            } => sliver(class, icmp, ip_options),
        }
    }
}

/// `r0 = bpf_skb_load_bytes(skb, offset, r10 + stack, len)`.
fn load_bytes(a: &mut Assembler, offset: i32, stack: i32, len: i32) {
    a.mov(R1, R6)
        .mov_imm(R2, offset)
        .mov(R3, R10)
        .add_imm(R3, stack)
        .mov_imm(R4, len)
        .call(HELPER_SKB_LOAD_BYTES);
}

fn sliver(class: u32, icmp: u32, ip_options: u32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Assembler::new();
    let (v4, v6, options, out) = (a.label(), a.label(), a.label(), a.label());
    // r6 = skb; r7 = the class the packet goes to.
    a.mov(R6, R1).mov_imm(R7, class as i32);
    a.load(Size::Word, R0, R6, SKB_PROTOCOL)
        .jeq_imm(R0, be16(0x0800), v4)
        .jeq_imm(R0, be16(0x86dd), v6)
        .ja(out);

    // IPv4: the first 10 header bytes to r10-16 (version/IHL at -16,
    // fragment offset at -10, protocol at -7).
    a.place(v4);
    load_bytes(&mut a, 0, -16, 10);
    a.jne_imm(R0, 0, out)
        .load(Size::Byte, R1, R10, -16)
        .and_imm(R1, 0x0f)
        .jgt_imm(R1, 5, options)
        .load(Size::Byte, R1, R10, -7)
        .jne_imm(R1, 1, out)
        .load(Size::Half, R1, R10, -10)
        .and_imm(R1, be16(0x1fff))
        .jne_imm(R1, 0, out);
    // ICMP type, right after the 20-byte header.
    load_bytes(&mut a, 20, -8, 1);
    a.jne_imm(R0, 0, out)
        .load(Size::Byte, R1, R10, -8)
        .jne_imm(R1, 8, out)
        .mov_imm(R7, icmp as i32)
        .ja(out);
    a.place(options);
    a.mov_imm(R7, ip_options as i32).ja(out);

    // IPv6: next header 58 (ICMPv6) right after the fixed header, type 128.
    a.place(v6);
    load_bytes(&mut a, 6, -8, 1);
    a.jne_imm(R0, 0, out)
        .load(Size::Byte, R1, R10, -8)
        .jne_imm(R1, 58, out);
    load_bytes(&mut a, 40, -8, 1);
    a.jne_imm(R0, 0, out)
        .load(Size::Byte, R1, R10, -8)
        .jne_imm(R1, 128, out)
        .mov_imm(R7, icmp as i32);

    a.place(out);
    a.store(Size::Word, R6, SKB_PRIORITY, R7)
        .mov_imm(R0, 1)
        .exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernels_limit_and_say_what_they_are() {
        let p = Program::Sliver {
            class: 0x1_ffff,
            icmp: 0x1_0004,
            ip_options: 0x1_0005,
        };
        assert_eq!(p.name(), "bwcap1_s_ffff");
        assert!(p.name().len() < 16);
        assert_eq!(Program::Node { class: 0x1_0002 }.name(), "bwcap1_n_2");
    }

    #[test]
    fn programs_assemble() {
        let p = Program::Sliver {
            class: 0x1_0010,
            icmp: 0x1_0004,
            ip_options: 0x1_0005,
        };
        let insns = p.instructions().unwrap();
        assert!(insns.len() > 30 && insns.len() < 64, "{}", insns.len());
        assert_eq!(
            Program::Node { class: 0x1_0002 }
                .instructions()
                .unwrap()
                .len(),
            4
        );
    }
}
