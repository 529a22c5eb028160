import Foundation
public import GRPCCore
import SwiftProtobuf
public import HostnatProto
public import HostnatTrace

/// Millisecond wall clock, injectable so tests can control time.
public typealias MillisecondClock = @Sendable () -> Int64

/// The wall clock.
public let systemMillisecondClock: MillisecondClock = { Int64(Date().timeIntervalSince1970 * 1000) }

/// Serves host agents' control streams (proto: HostControlService): on hello the current
/// snapshot is pushed; ACKs and NACKs are matched by nonce and recorded durably; port requests,
/// usage reports, ACKs and hellos go to `events` (the core).
public struct HostControlService: Hostnat_V1_HostControlService.SimpleServiceProtocol {
  var stream: ControlStream<AgentStreamKind>
  public var store: ControllerStore { stream.store }
  public var registry: SessionRegistry<Hostnat_V1_ControllerMessage> { stream.registry }
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace? {
    get { stream.trace }
    set { stream.trace = newValue }
  }
  /// Without one, every port request is refused with the reason.
  let events: (any HostControlEvents)?

  public init(
    store: ControllerStore,
    registry: SessionRegistry<Hostnat_V1_ControllerMessage>,
    heartbeatInterval: Duration = .seconds(1),
    nowMs: @escaping MillisecondClock = systemMillisecondClock,
    events: (any HostControlEvents)? = nil
  ) {
    self.events = events
    stream = ControlStream(store: store, registry: registry, heartbeatInterval: heartbeatInterval, nowMs: nowMs)
    // Its underlay address may be new: the edge's routes follow it.
    stream.opened = { hello in await events?.connected(hello) }
    // What it holds may conflict with what the store gives (rule 9): reconciled first.
    stream.prepare = { hello in try await events?.helloReceived(hello) }
    stream.acknowledged = { ack in events?.acknowledged(ack) }
    stream.received = { [registry] hostID, message in await Self.handle(hostID: hostID, message, events: events, registry: registry) }
  }

  public func connect(
    request: RPCAsyncSequence<Hostnat_V1_AgentMessage, any Error>,
    response: RPCWriter<Hostnat_V1_ControllerMessage>,
    context: ServerContext
  ) async throws {
    try await stream.run(request: request, response: response, remote: context.remotePeer)
  }

  /// Pushes a snapshot to its host if it is connected; returns whether it was queued. The
  /// caller has already committed it to the store (a push never precedes durability).
  @discardableResult
  public func push(_ config: Hostnat_V1_HostConfig) -> Bool {
    registry.push(config)
  }

  /// The messages only agents send: dynamic port allocation.
  static func handle(
    hostID: String, _ message: Hostnat_V1_AgentMessage.OneOf_Message, events: (any HostControlEvents)?,
    registry: SessionRegistry<Hostnat_V1_ControllerMessage>
  ) async {
    switch message {
    case .usage(let report):
      await events?.usageReported(hostID: hostID, report)
    case .portRequest(let request):
      let grant: Hostnat_V1_PortGrant
      if let events {
        grant = await events.portRequested(hostID: hostID, request)
      } else {
        grant = .with {
          $0.requestID = request.requestID
          $0.refusedReason = "no NAT gateway with dynamic port allocation covers \(request.instance)/\(request.nic)"
        }
      }
      registry.send(hostID: hostID, .with { $0.portGrant = grant })
    case .hello, .ack, .nack, .heartbeat:
      break  // the stream's own
    }
  }
}
