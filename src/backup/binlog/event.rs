//! Binlog event type codes (MariaDB numbering where it differs from
//! MySQL), shared by the archiver, which cuts segments at them, and the
//! replay, which reads segments back.
pub const QUERY: u8 = 2;
pub const STOP: u8 = 3;
pub const ROTATE: u8 = 4;
pub const FDE: u8 = 15;
pub const XID: u8 = 16;
pub const INCIDENT: u8 = 26;
pub const HEARTBEAT: u8 = 27;
pub const XA_PREPARE: u8 = 38;
pub const MARIA_GTID: u8 = 162;
pub const MARIA_GTID_LIST: u8 = 163;
