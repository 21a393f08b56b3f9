//! The `x-kvorum-*` HTTP header names, for client requests and internal calls alike.

/// Header naming the route a client request was sent on, `<slot>:<epoch>:<group>`
/// ([`crate::route::RouteHeader`]): the node checks it against its map before proposing.
pub const ROUTE_HEADER: &str = "x-kvorum-route";
/// Header counting how many times a request was forwarded between nodes.
pub const HOPS_HEADER: &str = "x-kvorum-hops";
/// Header carrying the cluster secret on internal routes.
pub const SECRET_HEADER: &str = "x-kvorum-secret";
/// Header carrying the cluster id on internal routes.
pub const CLUSTER_HEADER: &str = "x-kvorum-cluster";
/// Header carrying the sending node's id on Raft RPCs; RPCs of removed nodes are refused.
pub const FROM_HEADER: &str = "x-kvorum-node";
/// Header carrying the sender's own incarnation on internal requests.
pub const INCARNATION_HEADER: &str = "x-kvorum-incarnation";
/// Header carrying the incarnation the sender's map records for the receiver, when it has one.
pub const TO_INCARNATION_HEADER: &str = "x-kvorum-to-incarnation";
/// Header carrying the id of the node a Raft RPC is addressed to, next to
/// [`TO_INCARNATION_HEADER`]: a receiver with another id (its address was reused by a new node)
/// refuses the RPC, and only a receiver with this id stops when the incarnation is not its own.
pub const TO_NODE_HEADER: &str = "x-kvorum-to-node";
