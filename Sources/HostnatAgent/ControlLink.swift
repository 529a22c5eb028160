import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

/// The control channel as a data-plane process sees it. Written into the status file, so the lab
/// and SREs can tell "connected and current" from "running on the last good config".
public struct ControlLinkStatus: Sendable, Codable, Equatable {
  public var controller: String
  public var connected: Bool = false
  /// Unix ms of the last message from the controller (0 = never).
  public var lastHeardMs: Int64 = 0
  /// Successful stream openings.
  public var connects: Int = 0
  public var lastError: String?
  public var appliedVersion: UInt64 = 0
  /// Unix ms when the applied config was applied (also after loading it from disk at start).
  public var appliedAtMs: Int64 = 0
  public var acks: Int = 0
  public var nacks: Int = 0
  public var lastNack: String?
}

/// Timing of a control channel: heartbeats, how long silence means the controller is gone, and
/// reconnect backoff (exponential with full jitter, so a restarted controller is not hit by every
/// host in the same millisecond).
public struct ControlTiming: Sendable {
  public var heartbeat: Duration = .seconds(1)
  public var silenceTimeout: Duration = .seconds(3)
  public var initialBackoff: Duration = .milliseconds(100)
  public var maximumBackoff: Duration = .seconds(2)
  public init() {}
}

/// Thrown inside a stream when the controller has been silent too long (a SIGSTOPped controller
/// keeps its TCP connection open; only the heartbeat tells).
struct ControllerSilent: Error, CustomStringConvertible {
  var seconds: Double
  var description: String { "no message from the controller for \(seconds) s" }
}

/// Shared state of one control channel; `Sendable` so the stream tasks and the status writer can use it.
public final class ControlLink: Sendable {
  private let state: Mutex<ControlLinkStatus>
  public let host: String
  public let port: Int
  public let timing: ControlTiming

  public init(controller: String, timing: ControlTiming = .init()) throws(ConfigRejection) {
    let parts = controller.split(separator: ":")
    guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else {
      throw ConfigRejection("--controller: \(controller.debugDescription) is not HOST:PORT")
    }
    self.host = String(parts[0])
    self.port = port
    self.timing = timing
    self.state = Mutex(ControlLinkStatus(controller: controller))
  }

  public var status: ControlLinkStatus { state.withLock { $0 } }

  public func update(_ body: (inout ControlLinkStatus) -> Void) { state.withLock { body(&$0) } }

  func heard() { update { $0.lastHeardMs = nowMs() } }

  /// Runs `session` on fresh connections forever: each attempt gets a new client (no state
  /// survives from a dead connection), failures back off with jitter. Returns when cancelled.
  func maintain(_ session: @escaping @Sendable (ControlClient) async throws -> Void) async {
    var backoff = timing.initialBackoff
    while !Task.isCancelled {
      let started = ContinuousClock.now
      do {
        let transport = try HTTP2ClientTransport.Posix(
          target: .ipv4(address: host, port: port), transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
          try await session(client)
        }
        update { $0.lastError = "stream ended by the controller" }
      } catch is CancellationError {
        break
      } catch {
        update { $0.lastError = "\(error)" }
      }
      update { $0.connected = false }
      if Task.isCancelled { break }
      // A stream that lived a while was a real connection: start backing off from scratch.
      if ContinuousClock.now - started > .seconds(5) { backoff = timing.initialBackoff }
      let jittered = Double.random(in: 0.5...1.0) * Double(backoff.components.attoseconds / 1_000_000_000_000_000 + backoff.components.seconds * 1000)
      try? await Task.sleep(for: .milliseconds(Int64(jittered)))
      backoff = min(backoff * 2, timing.maximumBackoff)
    }
    update { $0.connected = false }
  }

  /// The receive side of one control stream, shared by agent and edge: marks the link connected
  /// at the first message, sends heartbeats, fails when the controller goes silent, and passes
  /// each message to `handle`, whose answer (if any) is queued on `outbound`. Ends `outbound`
  /// when it returns, which ends the request side too.
  func serve<Incoming: Sendable, Outgoing: Sendable>(
    _ messages: RPCAsyncSequence<Incoming, any Error>,
    outbound: AsyncStream<Outgoing>.Continuation,
    heartbeat: @escaping @Sendable () -> Outgoing,
    handle: @escaping @Sendable (Incoming) -> Outgoing?
  ) async throws {
    defer { outbound.finish() }
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await self.watchdog() }
      group.addTask {
        while true {
          try await Task.sleep(for: self.timing.heartbeat)
          outbound.yield(heartbeat())
        }
      }
      group.addTask {
        var first = true
        for try await message in messages {
          self.heard()
          if first {
            first = false
            self.update { $0.connected = true; $0.connects += 1; $0.lastError = nil }
          }
          if let answer = handle(message) { outbound.yield(answer) }
        }
      }
      try await group.next()
      group.cancelAll()
    }
  }

  /// Fails when the controller has been silent longer than the timeout; run beside a stream.
  func watchdog() async throws {
    let limit = Int64(timing.silenceTimeout.components.seconds * 1000 + timing.silenceTimeout.components.attoseconds / 1_000_000_000_000_000)
    while true {
      try await Task.sleep(for: .milliseconds(200))
      let silent = nowMs() - status.lastHeardMs
      if silent > limit { throw ControllerSilent(seconds: Double(silent) / 1000) }
    }
  }

  /// Call options for the long-lived stream: fail at once when the controller is unreachable
  /// rather than queue (the loop above owns retrying).
  static var streamOptions: CallOptions {
    var options = CallOptions.defaults
    options.waitForReady = false
    return options
  }
}

/// The gRPC client a control stream runs on.
typealias ControlClient = GRPCClient<HTTP2ClientTransport.Posix>

/// Unix milliseconds.
public func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
