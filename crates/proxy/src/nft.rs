//! Small constructors for the `nftables` crate's JSON schema types, so that the renderer reads
//! close to nft's own syntax (`ip daddr`, `meta l4proto`, `goto CHAIN`, `numgen random mod N`).
//! No I/O.

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Map, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Prefix, SetItem, Verdict,
};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NAT, NATFamily, NATFlag, Operator, Reject, RejectType, Statement,
    VerdictMap,
};

/// An owned expression.
pub type Expr = Expression<'static>;
/// An owned statement.
pub type Stmt = Statement<'static>;

/// The packet-mark bit that asks for masquerading in postrouting (kube-proxy's).
pub const MASQ_BIT: u32 = 0x4000;

/// A string expression (addresses, protocol names, `@set` references, ...).
pub fn s(v: impl Into<String>) -> Expr {
    Expression::String(Cow::Owned(v.into()))
}

/// A number expression.
pub fn n(v: u32) -> Expr {
    Expression::Number(v)
}

/// A payload field, e.g. `field("ip", "daddr")` or `field("th", "dport")`.
pub fn field(protocol: &'static str, name: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

/// `meta KEY`.
pub fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// `ct KEY`.
pub fn ct(key: &'static str) -> Expr {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

/// `fib saddr|daddr type`.
pub fn fib_type(flag: FibFlag) -> Expr {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([flag]),
    }))
}

/// A concatenation `a . b . c`.
pub fn concat(parts: Vec<Expr>) -> Expr {
    Expression::Named(NamedExpression::Concat(parts))
}

/// An address prefix, e.g. `10.42.0.0/16`.
pub fn prefix(addr: impl Into<String>, len: u32) -> Expr {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len,
    }))
}

/// `left OP right` as a match statement.
pub fn cmp(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

/// `left == right`.
pub fn eq(left: Expr, right: Expr) -> Stmt {
    cmp(left, Operator::EQ, right)
}

/// `left != right`.
pub fn ne(left: Expr, right: Expr) -> Stmt {
    cmp(left, Operator::NEQ, right)
}

/// `meta l4proto PROTO`.
pub fn l4proto(proto: &str) -> Stmt {
    eq(meta(MetaKey::L4proto), s(proto))
}

/// `ct state new`.
pub fn ct_new() -> Stmt {
    cmp(ct("state"), Operator::IN, s("new"))
}

/// `jump CHAIN`.
pub fn jump(chain: impl Into<String>) -> Stmt {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(chain.into()),
    })
}

/// `goto CHAIN`.
pub fn goto(chain: impl Into<String>) -> Stmt {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(chain.into()),
    })
}

/// The verdict `goto CHAIN` as a map value.
pub fn goto_verdict(chain: impl Into<String>) -> Expr {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: Cow::Owned(chain.into()),
    }))
}

/// The verdict `drop` as a map value.
pub fn drop_verdict() -> Expr {
    Expression::Verdict(Verdict::Drop)
}

/// `KEY vmap @MAP`.
pub fn vmap_named(key: Expr, map: &str) -> Stmt {
    Statement::VerdictMap(VerdictMap {
        key,
        data: s(format!("@{map}")),
    })
}

/// `numgen random mod N vmap { 0 : goto A, 1 : goto B, ... }`.
pub fn numgen_vmap(chains: &[String]) -> Stmt {
    let items = chains
        .iter()
        .enumerate()
        .map(|(i, c)| SetItem::Mapping(n(i as u32), goto_verdict(c.clone())))
        .collect();
    Statement::VerdictMap(VerdictMap {
        key: Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: chains.len() as u32,
            offset: None,
        })),
        data: Expression::Named(NamedExpression::Set(items)),
    })
}

/// `dnat ip to ADDR:PORT`.
pub fn dnat(addr: impl Into<String>, port: u16) -> Stmt {
    Statement::DNAT(Some(NAT {
        addr: Some(s(addr)),
        family: Some(NATFamily::IP),
        port: Some(n(port.into())),
        flags: None,
    }))
}

/// `dnat ip to numgen random mod N map { 0 : ADDR . PORT, 1 : ... }`: one of `targets` at
/// random.
pub fn dnat_random(targets: &[(String, u16)]) -> Stmt {
    let items = targets
        .iter()
        .enumerate()
        .map(|(i, (addr, port))| {
            SetItem::Mapping(
                n(i as u32),
                concat(vec![s(addr.clone()), n((*port).into())]),
            )
        })
        .collect();
    let choice = Expression::Named(NamedExpression::Map(Box::new(Map {
        key: Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: targets.len() as u32,
            offset: None,
        })),
        data: Expression::Named(NamedExpression::Set(items)),
    })));
    Statement::DNAT(Some(NAT {
        addr: Some(choice),
        family: Some(NATFamily::IP),
        port: None,
        flags: None,
    }))
}

/// `masquerade fully-random`.
pub fn masquerade() -> Stmt {
    Statement::Masquerade(Some(NAT {
        addr: None,
        family: None,
        port: None,
        flags: Some(HashSet::from([NATFlag::FullyRandom])),
    }))
}

/// `meta mark set meta mark | BIT`.
pub fn set_mark_bit(bit: u32) -> Stmt {
    Statement::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
            meta(MetaKey::Mark),
            n(bit),
        ]))),
    })
}

/// `meta mark set meta mark ^ BIT`.
pub fn clear_mark_bit(bit: u32) -> Stmt {
    Statement::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::BinaryOperation(Box::new(BinaryOperation::XOR(
            meta(MetaKey::Mark),
            n(bit),
        ))),
    })
}

/// `meta mark & BIT == 0`.
pub fn mark_bit_clear(bit: u32) -> Stmt {
    eq(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), n(bit)))),
        n(0),
    )
}

/// `reject with tcp reset`.
pub fn reject_tcp_reset() -> Stmt {
    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
}

/// `reject` (ICMP port unreachable).
pub fn reject() -> Stmt {
    Statement::Reject(None)
}

/// `return`.
pub fn ret() -> Stmt {
    Statement::Return(None)
}

/// `update @SET { KEY }`.
pub fn update_set(set: &str, key: Expr) -> Stmt {
    Statement::Set(nftables::stmt::Set {
        op: nftables::stmt::SetOp::Update,
        elem: key,
        set: Cow::Owned(format!("@{set}")),
    })
}
