//! The three fixed-size record bodies: BEGIN_REQUEST (FastCGI 1.0 §5.1), END_REQUEST (§5.5)
//! and UNKNOWN_TYPE (§4.2). Each is 8 bytes; trailing bytes beyond those 8 are ignored, short
//! bodies are an error.

use super::error::ProtocolError;
use super::record::RecordType;

/// `FCGI_KEEP_CONN`: the only flag of BEGIN_REQUEST (FastCGI 1.0 §5.1).
const KEEP_CONN: u8 = 1;

/// Bytes in each fixed-size body.
const BODY_LEN: usize = 8;

/// The role the client asks the application to play (FastCGI 1.0 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `FCGI_RESPONDER` (1): produce the HTTP response.
    Responder,
    /// `FCGI_AUTHORIZER` (2): decide whether the request may proceed.
    Authorizer,
    /// `FCGI_FILTER` (3): transform the extra DATA stream.
    Filter,
    /// Any other role value.
    Other(u16),
}

impl Role {
    /// Maps a wire value to its role.
    pub fn from_u16(value: u16) -> Self {
        match value {
            1 => Role::Responder,
            2 => Role::Authorizer,
            3 => Role::Filter,
            other => Role::Other(other),
        }
    }

    /// The wire value of this role.
    pub fn as_u16(self) -> u16 {
        match self {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 3,
            Role::Other(value) => value,
        }
    }
}

/// The body of BEGIN_REQUEST (FastCGI 1.0 §5.1, `FCGI_BeginRequestBody`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeginRequest {
    /// The role asked for.
    pub role: Role,
    /// Keep the connection open after this request; when false the application closes it.
    pub keep_conn: bool,
}

impl BeginRequest {
    /// The body's wire form.
    pub fn encode(&self) -> [u8; 8] {
        let [role_high, role_low] = self.role.as_u16().to_be_bytes();
        let flags = if self.keep_conn { KEEP_CONN } else { 0 };
        [role_high, role_low, flags, 0, 0, 0, 0, 0]
    }

    /// Parses the body; unknown flag bits are ignored.
    pub fn decode(content: &[u8]) -> Result<Self, ProtocolError> {
        let body = fixed_body(RecordType::BeginRequest, content)?;
        Ok(BeginRequest {
            role: Role::from_u16(u16::from_be_bytes([body[0], body[1]])),
            keep_conn: body[2] & KEEP_CONN != 0,
        })
    }
}

/// How the application ended a request, at the protocol level (FastCGI 1.0 §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0): normal end.
    RequestComplete,
    /// `FCGI_CANT_MPX_CONN` (1): refused a second concurrent request on this connection.
    CantMpxConn,
    /// `FCGI_OVERLOADED` (2): refused for lack of some resource.
    Overloaded,
    /// `FCGI_UNKNOWN_ROLE` (3): refused a role the application does not play.
    UnknownRole,
    /// Any other status value.
    Other(u8),
}

impl ProtocolStatus {
    /// Maps a wire byte to its status.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            other => ProtocolStatus::Other(other),
        }
    }

    /// The wire byte of this status.
    pub fn as_u8(self) -> u8 {
        match self {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(value) => value,
        }
    }
}

/// The body of END_REQUEST (FastCGI 1.0 §5.5, `FCGI_EndRequestBody`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRequest {
    /// The application's exit status, as a CGI program's would be.
    pub app_status: u32,
    /// Whether the request ran or why it was refused.
    pub protocol_status: ProtocolStatus,
}

impl EndRequest {
    /// The body's wire form.
    pub fn encode(&self) -> [u8; 8] {
        let [s3, s2, s1, s0] = self.app_status.to_be_bytes();
        [s3, s2, s1, s0, self.protocol_status.as_u8(), 0, 0, 0]
    }

    /// Parses the body.
    pub fn decode(content: &[u8]) -> Result<Self, ProtocolError> {
        let body = fixed_body(RecordType::EndRequest, content)?;
        Ok(EndRequest {
            app_status: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            protocol_status: ProtocolStatus::from_u8(body[4]),
        })
    }
}

/// The body of UNKNOWN_TYPE (FastCGI 1.0 §4.2, `FCGI_UnknownTypeBody`): the type byte of a
/// management record the sender did not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownType {
    /// The type byte that was not understood.
    pub record_type: u8,
}

impl UnknownType {
    /// The body's wire form.
    pub fn encode(&self) -> [u8; 8] {
        [self.record_type, 0, 0, 0, 0, 0, 0, 0]
    }

    /// Parses the body.
    pub fn decode(content: &[u8]) -> Result<Self, ProtocolError> {
        let body = fixed_body(RecordType::UnknownType, content)?;
        Ok(UnknownType {
            record_type: body[0],
        })
    }
}

fn fixed_body(record_type: RecordType, content: &[u8]) -> Result<&[u8; BODY_LEN], ProtocolError> {
    content
        .get(..BODY_LEN)
        .and_then(|body| body.try_into().ok())
        .ok_or(ProtocolError::BodyTooShort {
            record_type,
            expected: BODY_LEN,
            actual: content.len(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn begin_request_has_the_spec_layout() {
        let begin = BeginRequest {
            role: Role::Responder,
            keep_conn: true,
        };
        assert_eq!(begin.encode(), [0, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(BeginRequest::decode(&begin.encode()), Ok(begin));
        let closing = BeginRequest {
            role: Role::Other(0x1234),
            keep_conn: false,
        };
        assert_eq!(closing.encode(), [0x12, 0x34, 0, 0, 0, 0, 0, 0]);
        assert_eq!(BeginRequest::decode(&closing.encode()), Ok(closing));
    }

    #[test]
    fn begin_request_ignores_unknown_flags() {
        let decoded = BeginRequest::decode(&[0, 2, 0xfe, 0, 0, 0, 0, 0]);
        assert_eq!(
            decoded,
            Ok(BeginRequest {
                role: Role::Authorizer,
                keep_conn: false
            })
        );
    }

    #[test]
    fn end_request_has_the_spec_layout() {
        let end = EndRequest {
            app_status: 0x0102_0304,
            protocol_status: ProtocolStatus::Overloaded,
        };
        assert_eq!(end.encode(), [1, 2, 3, 4, 2, 0, 0, 0]);
        assert_eq!(EndRequest::decode(&end.encode()), Ok(end));
    }

    #[test]
    fn unknown_type_round_trips() {
        let unknown = UnknownType { record_type: 200 };
        assert_eq!(unknown.encode(), [200, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(UnknownType::decode(&unknown.encode()), Ok(unknown));
    }

    #[test]
    fn short_bodies_are_refused_with_their_type() {
        assert_eq!(
            EndRequest::decode(&[0; 7]),
            Err(ProtocolError::BodyTooShort {
                record_type: RecordType::EndRequest,
                expected: 8,
                actual: 7
            })
        );
        assert!(BeginRequest::decode(&[]).is_err());
        assert!(UnknownType::decode(&[1]).is_err());
    }

    #[test]
    fn role_and_status_values_round_trip() {
        for value in 0..=u16::MAX {
            assert_eq!(Role::from_u16(value).as_u16(), value);
        }
        for value in 0..=u8::MAX {
            assert_eq!(ProtocolStatus::from_u8(value).as_u8(), value);
        }
        assert_eq!(Role::from_u16(3), Role::Filter);
        assert_eq!(ProtocolStatus::from_u8(1), ProtocolStatus::CantMpxConn);
        assert_eq!(ProtocolStatus::from_u8(3), ProtocolStatus::UnknownRole);
    }
}
