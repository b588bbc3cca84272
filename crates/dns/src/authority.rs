//! The request handler hickory-server calls for every query: answers for the cluster domain
//! (and PTR for known addresses) from the [`Zone`], everything else forwarded.
//!
//! Bad input never panics: a message that does not parse gets FORMERR from hickory-server; one
//! with no or several questions gets FORMERR here, another opcode NOTIMP, another class
//! REFUSED, and a failed upstream SERVFAIL.

use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::zone::{Answer, Zone};

/// How many ExternalName aliases are followed inside the cluster domain.
const MAX_CHASE: usize = 8;
/// The UDP payload size this server advertises (and caps answers at) for EDNS clients.
const MAX_PAYLOAD: u16 = 4096;

/// Answers queries from the zone, forwards the rest.
#[derive(Clone)]
pub struct ClusterHandler {
    zone: Arc<RwLock<Zone>>,
    forwarder: Arc<Forwarder>,
}

/// A response, before it is encoded.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    /// An upstream's TC bit, passed on so that the client retries over TCP.
    truncated: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Self {
        Reply {
            code,
            authoritative: false,
            truncated: false,
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
        }
    }
}

impl ClusterHandler {
    /// A handler over `zone` that forwards through `forwarder`.
    pub fn new(zone: Arc<RwLock<Zone>>, forwarder: Forwarder) -> Self {
        ClusterHandler {
            zone,
            forwarder: Arc::new(forwarder),
        }
    }

    fn lookup(&self, name: &Name, qtype: RecordType) -> Answer {
        match self.zone.read() {
            Ok(zone) => zone.lookup(name, qtype),
            Err(poisoned) => poisoned.into_inner().lookup(name, qtype),
        }
    }

    fn soa(&self) -> Record {
        match self.zone.read() {
            Ok(zone) => zone.soa(),
            Err(poisoned) => poisoned.into_inner().soa(),
        }
    }

    fn in_zone(&self, name: &Name) -> bool {
        match self.zone.read() {
            Ok(zone) => zone.domain().zone_of(name),
            Err(poisoned) => poisoned.into_inner().domain().zone_of(name),
        }
    }

    /// The reply to `request`.
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.message_type != MessageType::Query {
            return Reply::code(ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::code(ResponseCode::FormErr);
        };
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let qname: Name = query.name().clone().into();
        let qtype = query.query_type();
        match self.lookup(&qname, qtype) {
            Answer::NotOurs => {
                let tcp = request.protocol() == Protocol::Tcp;
                match self
                    .forwarder
                    .forward(
                        request.as_slice(),
                        request.metadata.id,
                        query.original(),
                        tcp,
                    )
                    .await
                {
                    Some(msg) => Reply {
                        code: msg.metadata.response_code,
                        authoritative: msg.metadata.authoritative,
                        truncated: msg.metadata.truncation,
                        answers: msg.answers,
                        authorities: msg.authorities,
                        additionals: msg.additionals,
                    },
                    None => Reply::code(ResponseCode::ServFail),
                }
            }
            Answer::NotReady => Reply::code(ResponseCode::ServFail),
            Answer::NxDomain => Reply {
                code: ResponseCode::NXDomain,
                authoritative: true,
                truncated: false,
                answers: vec![],
                authorities: vec![self.soa()],
                additionals: vec![],
            },
            Answer::NoData => Reply {
                code: ResponseCode::NoError,
                authoritative: true,
                truncated: false,
                answers: vec![],
                authorities: vec![self.soa()],
                additionals: vec![],
            },
            Answer::Records {
                mut answers,
                additionals,
                chase,
            } => {
                if let Some(target) = chase {
                    self.chase(target, qtype, &mut answers).await;
                }
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    truncated: false,
                    answers,
                    authorities: vec![],
                    additionals,
                }
            }
        }
    }

    /// Follows an ExternalName's CNAME: inside the cluster domain from the zone, outside it
    /// through the upstreams; what is found is appended to `answers` (nothing on failure: the
    /// client still has the CNAME).
    async fn chase(&self, mut target: Name, qtype: RecordType, answers: &mut Vec<Record>) {
        for _ in 0..MAX_CHASE {
            if !self.in_zone(&target) {
                if let Some(msg) = self.forwarder.resolve(&target, qtype).await {
                    answers.extend(msg.answers);
                }
                return;
            }
            match self.lookup(&target, qtype) {
                Answer::Records {
                    answers: found,
                    chase,
                    ..
                } => {
                    answers.extend(found);
                    match chase {
                        Some(next) => target = next,
                        None => return,
                    }
                }
                _ => return,
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.truncation = reply.truncated;
        metadata.recursion_available = true;
        metadata.response_code = reply.code;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_PAYLOAD));
            edns
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS response");
                let mut header = hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                };
                header.metadata.response_code = ResponseCode::ServFail;
                header.into()
            }
        }
    }
}
