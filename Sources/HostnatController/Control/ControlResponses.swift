import HostnatProto

/// A host acknowledged a config version (durably recorded before this is sent).
public struct HostAcknowledgement: Sendable, Equatable {
  public var hostID: String
  public var version: UInt64
}

/// What a host's answer to a push changes, the same for agents and the edge: the registry's
/// live view first (so status is current at once), then the durable record.
enum ControlResponses {
  static func acknowledge<Outbound>(
    _ ack: Hostnat_V1_Ack, hostID: String, kind: Hostnat_V1_HostKind,
    registry: SessionRegistry<Outbound>, store: ControllerStore, nowMs: Int64,
    notify: AsyncStream<HostAcknowledgement>.Continuation? = nil
  ) throws {
    let version = registry.acknowledge(hostID: hostID, nonce: ack.nonce, version: ack.version, nowMs: nowMs)
    try store.write { try $0.recordResponse(hostID: hostID, kind: kind, ackedVersion: version, nack: nil, underlay: nil) }
    notify?.yield(HostAcknowledgement(hostID: hostID, version: version))
  }

  static func reject<Outbound>(
    _ nack: Hostnat_V1_Nack, hostID: String, kind: Hostnat_V1_HostKind,
    registry: SessionRegistry<Outbound>, store: ControllerStore, nowMs: Int64
  ) throws {
    registry.reject(hostID: hostID, nonce: nack.nonce, error: nack.error, nowMs: nowMs)
    let reason = nack.error.isEmpty ? "rejected without a reason" : nack.error
    try store.write { try $0.recordResponse(hostID: hostID, kind: kind, ackedVersion: nil, nack: reason, underlay: nil) }
  }
}
