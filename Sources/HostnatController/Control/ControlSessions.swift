public import HostnatProto
import HostnatControlRules
import SwiftProtobuf

/// The controller's open control streams: one registry for host agents, one for the edge. The
/// core pushes committed configs here and the control services feed them; neither holds the
/// other, so the controller is built core first, services second.
public struct ControlSessions: Sendable {
  public let hosts: SessionRegistry<Hostnat_V1_ControllerMessage>
  public let edges: SessionRegistry<Hostnat_V1_EdgeControllerMessage>

  public init(
    hosts: SessionRegistry<Hostnat_V1_ControllerMessage> = SessionRegistry(),
    edges: SessionRegistry<Hostnat_V1_EdgeControllerMessage> = SessionRegistry()
  ) {
    self.hosts = hosts
    self.edges = edges
  }

  /// Ends every stream and refuses new ones (graceful shutdown).
  public func shutdown() {
    hosts.shutdown()
    edges.shutdown()
  }
}

extension SessionRegistry where Outbound == Hostnat_V1_ControllerMessage {
  /// Pushes a snapshot to its host if it is connected; returns whether it was queued. The
  /// caller has already committed it to the store (a push never precedes durability).
  /// A host that lacks a feature the config needs is not sent it (control.proto rule 10).
  @discardableResult
  public func push(_ config: Hostnat_V1_HostConfig) -> Bool {
    let nonce = "v\(config.version)-\(UInt64.random(in: .min ... .max))"
    let message = Hostnat_V1_ControllerMessage.with {
      $0.push.nonce = nonce
      $0.push.config = config
    }
    return push(
      hostID: config.hostID, message, nonce: nonce, version: config.version, epoch: config.epoch,
      required: config.requiredFeatures)
  }
}

extension SessionRegistry where Outbound == Hostnat_V1_EdgeControllerMessage {
  /// Pushes the routing snapshot to every connected edge (or to one).
  public func push(_ config: Hostnat_V1_EdgeConfig, to edgeID: String? = nil) {
    for target in edgeID.map({ [$0] }) ?? connectedHosts {
      let nonce = "e\(config.version)-\(UInt64.random(in: .min ... .max))"
      let message = Hostnat_V1_EdgeControllerMessage.with {
        $0.push.nonce = nonce
        $0.push.config = config
      }
      push(hostID: target, message, nonce: nonce, version: config.version, epoch: config.epoch)
    }
  }
}

/// What a host's control stream tells the controller's core: port requests and usage reports
/// (dynamic port allocation), ACKs (which free quarantined blocks) and (re)connections (which
/// move the edge's routes). The core implements it; tests may pass their own.
public protocol HostControlEvents: Sendable {
  /// Answers a request for more ports for one VM NIC; a refusal says why.
  func portRequested(hostID: String, _ request: Hostnat_V1_PortRequest) async -> Hostnat_V1_PortGrant
  /// A usage report: NICs whose usage fell may give ports back.
  func usageReported(hostID: String, _ report: Hostnat_V1_PortUsageReport) async
  /// An ACK, already recorded durably. Must return at once: the stream keeps reading.
  func acknowledged(_ ack: HostAcknowledgement)
  /// A host said hello (its underlay address may be new).
  func connected(_ hello: Hostnat_V1_Hello) async
  /// A host's hello, before it is answered: what it holds (rule 9).
  func helloReceived(_ hello: Hostnat_V1_Hello) async throws
}
