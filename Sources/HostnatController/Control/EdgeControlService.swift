public import GRPCCore
import SwiftProtobuf
public import HostnatProto
public import HostnatTrace

/// Serves the edge's control stream (proto: EdgeControlService): the routing snapshot from NAT
/// IP:port blocks to hosts, with the same version and ACK rules as host configs.
public struct EdgeControlService: Hostnat_V1_EdgeControlService.SimpleServiceProtocol {
  public let store: ControllerStore
  public let registry: SessionRegistry<Hostnat_V1_EdgeControllerMessage>
  let heartbeatInterval: Duration
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace?
  let nowMs: MillisecondClock

  public init(
    store: ControllerStore,
    registry: SessionRegistry<Hostnat_V1_EdgeControllerMessage>,
    heartbeatInterval: Duration = .seconds(1),
    nowMs: @escaping MillisecondClock = systemMillisecondClock
  ) {
    self.store = store
    self.registry = registry
    self.heartbeatInterval = heartbeatInterval
    self.nowMs = nowMs
  }

  public func connect(
    request: RPCAsyncSequence<Hostnat_V1_EdgeMessage, any Error>,
    response: RPCWriter<Hostnat_V1_EdgeControllerMessage>,
    context: ServerContext
  ) async throws {
    var stream = ControlStream<Hostnat_V1_EdgeMessage, Hostnat_V1_EdgeControllerMessage>(
      registry: registry,
      heartbeatInterval: heartbeatInterval,
      nowMs: nowMs,
      hello: { message in
        if case .hello(let hello)? = message.message { return hello }
        return nil
      },
      heartbeat: { ms in .with { $0.heartbeat.sentMs = ms } },
      opened: { [self] hello in
        let config = try currentSnapshot(edgeID: hello.hostID, edgeHolds: hello.appliedVersion, underlay: hello.underlayAddress)
        push(config, to: hello.hostID)
      },
      received: { [self] edgeID, message in try handle(edgeID: edgeID, message) }
    )
    stream.trace = trace
    stream.remote = context.remotePeer
    try await stream.run(request: request, response: response)
  }

  /// Pushes the routing snapshot to every connected edge (or to one).
  public func push(_ config: Hostnat_V1_EdgeConfig, to edgeID: String? = nil) {
    let targets = edgeID.map { [$0] } ?? registry.connectedHosts
    for target in targets {
      let nonce = "e\(config.version)-\(UInt32.random(in: .min ... .max))"
      let message = Hostnat_V1_EdgeControllerMessage.with {
        $0.push.nonce = nonce
        $0.push.config = config
      }
      registry.send(hostID: target, message, nonce: nonce, version: config.version)
    }
  }

  func currentSnapshot(edgeID: String, edgeHolds applied: UInt64, underlay: String) throws -> Hostnat_V1_EdgeConfig {
    let now = nowMs()
    return try store.write { tx in
      try tx.recordResponse(hostID: edgeID, kind: .edge, ackedVersion: nil, nack: nil, underlay: underlay.isEmpty ? nil : underlay)
      let stored = try tx.reader.edgeConfig()
      if let stored, stored.version >= applied {
        return stored
      }
      var config = stored ?? Hostnat_V1_EdgeConfig()
      try tx.raiseVersionCounter(above: applied)
      config.version = try tx.nextVersion()
      config.generatedMs = now
      try tx.setEdgeConfig(config)
      return config
    }
  }

  func handle(edgeID: String, _ message: Hostnat_V1_EdgeMessage) throws {
    let now = nowMs()
    switch message.message {
    case .ack(let ack):
      try ControlResponses.acknowledge(ack, hostID: edgeID, kind: .edge, registry: registry, store: store, nowMs: now)
    case .nack(let nack):
      try ControlResponses.reject(nack, hostID: edgeID, kind: .edge, registry: registry, store: store, nowMs: now)
    case .heartbeat:
      registry.touch(hostID: edgeID, nowMs: now)
    case .hello:
      throw RPCError(code: .invalidArgument, message: "hello may only be the first message of a stream")
    case nil:
      throw RPCError(code: .invalidArgument, message: "empty edge message")
    }
  }
}
