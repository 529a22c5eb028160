import Foundation
public import GRPCCore
import SwiftProtobuf
public import HostnatProto
public import HostnatTrace

/// Millisecond wall clock, injectable so tests can control time.
public typealias MillisecondClock = @Sendable () -> Int64

/// The wall clock.
public let systemMillisecondClock: MillisecondClock = { Int64(Date().timeIntervalSince1970 * 1000) }

/// Answers a host's request for more ports (dynamic port allocation). The controller core
/// provides it; without one every request is refused with the reason.
public typealias PortRequestHandler = @Sendable (_ hostID: String, _ request: Hostnat_V1_PortRequest) async -> Hostnat_V1_PortGrant

/// Serves host agents' control streams (proto: HostControlService): on hello the current
/// snapshot is pushed; ACKs and NACKs are matched by nonce and recorded durably.
public struct HostControlService: Hostnat_V1_HostControlService.SimpleServiceProtocol {
  public let store: ControllerStore
  public let registry: SessionRegistry<Hostnat_V1_ControllerMessage>
  let heartbeatInterval: Duration
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace?
  let nowMs: MillisecondClock
  let portRequests: PortRequestHandler?
  let usageReports: (@Sendable (String, Hostnat_V1_PortUsageReport) async -> Void)?
  let acknowledgements: AsyncStream<HostAcknowledgement>.Continuation?
  let connected: (@Sendable (Hostnat_V1_Hello) -> Void)?

  public init(
    store: ControllerStore,
    registry: SessionRegistry<Hostnat_V1_ControllerMessage>,
    heartbeatInterval: Duration = .seconds(1),
    nowMs: @escaping MillisecondClock = systemMillisecondClock,
    portRequests: PortRequestHandler? = nil,
    usageReports: (@Sendable (String, Hostnat_V1_PortUsageReport) async -> Void)? = nil,
    acknowledgements: AsyncStream<HostAcknowledgement>.Continuation? = nil,
    connected: (@Sendable (Hostnat_V1_Hello) -> Void)? = nil
  ) {
    self.acknowledgements = acknowledgements
    self.connected = connected
    self.store = store
    self.registry = registry
    self.heartbeatInterval = heartbeatInterval
    self.nowMs = nowMs
    self.portRequests = portRequests
    self.usageReports = usageReports
  }

  public func connect(
    request: RPCAsyncSequence<Hostnat_V1_AgentMessage, any Error>,
    response: RPCWriter<Hostnat_V1_ControllerMessage>,
    context: ServerContext
  ) async throws {
    var stream = ControlStream<Hostnat_V1_AgentMessage, Hostnat_V1_ControllerMessage>(
      registry: registry,
      heartbeatInterval: heartbeatInterval,
      nowMs: nowMs,
      hello: { message in
        if case .hello(let hello)? = message.message { return hello }
        return nil
      },
      heartbeat: { ms in .with { $0.heartbeat.sentMs = ms } },
      opened: { [self] hello in
        let config = try currentSnapshot(hostID: hello.hostID, hostHolds: hello.appliedVersion, underlay: hello.underlayAddress)
        push(config)
        // Its underlay address may be new: the edge's routes follow it.
        connected?(hello)
      },
      received: { [self] hostID, message in try await handle(hostID: hostID, message) }
    )
    stream.trace = trace
    stream.remote = context.remotePeer
    try await stream.run(request: request, response: response)
  }

  /// Pushes a snapshot to its host if it is connected; returns whether it was queued. The
  /// caller has already committed it to the store (a push never precedes durability).
  @discardableResult
  public func push(_ config: Hostnat_V1_HostConfig) -> Bool {
    let nonce = "v\(config.version)-\(UInt32.random(in: .min ... .max))"
    let message = Hostnat_V1_ControllerMessage.with {
      $0.push.nonce = nonce
      $0.push.config = config
    }
    return registry.send(hostID: config.hostID, message, nonce: nonce, version: config.version)
  }

  /// The snapshot to send on hello. A host never seen before gets an empty config under a new
  /// version; a host that holds a version newer than the stored one (the database was restored
  /// from an older backup) gets the stored content re-issued above its version, so versions
  /// still only go up.
  func currentSnapshot(hostID: String, hostHolds applied: UInt64, underlay: String) throws -> Hostnat_V1_HostConfig {
    let now = nowMs()
    return try store.write { tx in
      try tx.recordResponse(hostID: hostID, kind: .agent, ackedVersion: nil, nack: nil, underlay: underlay.isEmpty ? nil : underlay)
      let stored = try tx.reader.hostConfig(hostID)
      if let stored, stored.version >= applied {
        return stored
      }
      var config = stored ?? Hostnat_V1_HostConfig.with { $0.hostID = hostID }
      try tx.raiseVersionCounter(above: applied)
      config.version = try tx.nextVersion()
      config.generatedMs = now
      try tx.setHostConfig(config, kind: .agent)
      return config
    }
  }

  func handle(hostID: String, _ message: Hostnat_V1_AgentMessage) async throws {
    let now = nowMs()
    switch message.message {
    case .ack(let ack):
      try ControlResponses.acknowledge(
        ack, hostID: hostID, kind: .agent, registry: registry, store: store, nowMs: now, notify: acknowledgements)
    case .nack(let nack):
      try ControlResponses.reject(nack, hostID: hostID, kind: .agent, registry: registry, store: store, nowMs: now)
    case .heartbeat:
      registry.touch(hostID: hostID, nowMs: now)
    case .usage(let report):
      registry.touch(hostID: hostID, nowMs: now)
      await usageReports?(hostID, report)
    case .portRequest(let request):
      registry.touch(hostID: hostID, nowMs: now)
      let grant: Hostnat_V1_PortGrant
      if let portRequests {
        grant = await portRequests(hostID, request)
      } else {
        grant = .with {
          $0.requestID = request.requestID
          $0.refusedReason = "no NAT gateway with dynamic port allocation covers \(request.instance)/\(request.nic)"
        }
      }
      registry.send(hostID: hostID, .with { $0.portGrant = grant })
    case .hello:
      throw RPCError(code: .invalidArgument, message: "hello may only be the first message of a stream")
    case nil:
      throw RPCError(code: .invalidArgument, message: "empty agent message")
    }
  }
}
