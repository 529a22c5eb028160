import HostnatAddressing
import HostnatControlRules
import HostnatProto
import SwiftProtobuf

/// A host acknowledged a config version (durably recorded before this is sent).
public struct HostAcknowledgement: Sendable, Equatable {
  public var hostID: String
  public var version: UInt64
  public var epoch: UInt64 = 0
}

/// An inbound control message as the stream sees it: what agents and the edge share, and the
/// rest for the service.
enum ControlInbound<Other: Sendable>: Sendable {
  case hello(Hostnat_V1_Hello)
  case ack(Hostnat_V1_Ack)
  case nack(Hostnat_V1_Nack)
  case heartbeat
  case other(Other)
  case empty
}

/// A config pushed on a control stream: versioned and stamped inside the transaction that
/// stores it.
protocol VersionedConfig: FencedSnapshot & Sendable {}

extension VersionedConfig {
  /// Stamps the config with its fencing token; call inside the transaction that stores it.
  mutating func stamp(storeID: String, epoch: UInt64, version: UInt64, nowMs: Int64) {
    self.storeID = storeID
    self.epoch = epoch
    self.version = version
    generatedMs = nowMs
    digest = ConfigDigest.of(self)
  }
}

extension Hostnat_V1_HostConfig: VersionedConfig {}
extension Hostnat_V1_EdgeConfig: VersionedConfig {}

/// What differs between the agents' and the edge's control streams: their messages, the config
/// they hold and where it is stored. Everything else (hello, snapshot on hello, ACK/NACK by
/// nonce, heartbeats, silence) is `ControlStream`'s, once for both.
protocol ControlKind: Sendable {
  associatedtype Inbound: SwiftProtobuf.Message & Sendable
  associatedtype Outbound: SwiftProtobuf.Message & Sendable
  associatedtype Other: Sendable
  associatedtype Config: VersionedConfig

  /// How the host is recorded in the store.
  static var hostKind: Hostnat_V1_HostKind { get }
  /// "agent" or "edge", for error messages.
  static var peerName: String { get }
  static func inbound(_ message: Inbound) -> ControlInbound<Other>
  /// Control.proto rule 14: refuses out-of-range values before anything reads them.
  static func validate(_ message: Inbound) throws(FieldError)
  static func heartbeat(sentMs: Int64) -> Outbound
  /// The stored config of the host, if any.
  static func storedConfig(_ reader: StoreReader, hostID: String) throws -> Config?
  /// The config a host never seen before starts from.
  static func emptyConfig(hostID: String) -> Config
  static func store(_ config: Config, _ tx: StoreTransaction) throws
  static func push(_ config: Config, to hostID: String, in registry: SessionRegistry<Outbound>)
}

/// Host agents' streams (proto: HostControlService).
enum AgentStreamKind: ControlKind {
  static let hostKind = Hostnat_V1_HostKind.agent
  static let peerName = "agent"

  static func inbound(_ message: Hostnat_V1_AgentMessage) -> ControlInbound<Hostnat_V1_AgentMessage.OneOf_Message> {
    switch message.message {
    case .hello(let hello)?: .hello(hello)
    case .ack(let ack)?: .ack(ack)
    case .nack(let nack)?: .nack(nack)
    case .heartbeat?: .heartbeat
    case let other?: .other(other)
    case nil: .empty
    }
  }

  static func validate(_ message: Hostnat_V1_AgentMessage) throws(FieldError) { try WireBounds.check(message) }

  static func heartbeat(sentMs: Int64) -> Hostnat_V1_ControllerMessage { .with { $0.heartbeat.sentMs = sentMs } }

  static func storedConfig(_ reader: StoreReader, hostID: String) throws -> Hostnat_V1_HostConfig? {
    try reader.hostConfig(hostID)
  }

  static func emptyConfig(hostID: String) -> Hostnat_V1_HostConfig { .with { $0.hostID = hostID } }

  static func store(_ config: Hostnat_V1_HostConfig, _ tx: StoreTransaction) throws {
    try tx.setHostConfig(config, kind: .agent)
  }

  static func push(_ config: Hostnat_V1_HostConfig, to hostID: String, in registry: SessionRegistry<Hostnat_V1_ControllerMessage>) {
    registry.push(config)
  }
}

/// The edge's stream (proto: EdgeControlService).
enum EdgeStreamKind: ControlKind {
  static let hostKind = Hostnat_V1_HostKind.edge
  static let peerName = "edge"

  static func inbound(_ message: Hostnat_V1_EdgeMessage) -> ControlInbound<Never> {
    switch message.message {
    case .hello(let hello)?: .hello(hello)
    case .ack(let ack)?: .ack(ack)
    case .nack(let nack)?: .nack(nack)
    case .heartbeat?: .heartbeat
    case nil: .empty
    }
  }

  static func validate(_ message: Hostnat_V1_EdgeMessage) throws(FieldError) { try WireBounds.check(message) }

  static func heartbeat(sentMs: Int64) -> Hostnat_V1_EdgeControllerMessage { .with { $0.heartbeat.sentMs = sentMs } }

  static func storedConfig(_ reader: StoreReader, hostID: String) throws -> Hostnat_V1_EdgeConfig? {
    try reader.edgeConfig()
  }

  static func emptyConfig(hostID: String) -> Hostnat_V1_EdgeConfig { Hostnat_V1_EdgeConfig() }

  static func store(_ config: Hostnat_V1_EdgeConfig, _ tx: StoreTransaction) throws {
    try tx.setEdgeConfig(config)
  }

  static func push(_ config: Hostnat_V1_EdgeConfig, to edgeID: String, in registry: SessionRegistry<Hostnat_V1_EdgeControllerMessage>) {
    registry.push(config, to: edgeID)
  }
}
