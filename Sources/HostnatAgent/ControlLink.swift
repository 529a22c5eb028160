public import HostnatAddressing
public import HostnatContracts
import Synchronization

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

/// What a node knows of its control channel (where the controller is, whether it is heard, the
/// version applied), shared by the stream client, the applied snapshot and the status writer.
public final class ControlLink: Sendable {
  private let state: Mutex<ControlLinkStatus>
  public let host: String
  public let port: Int
  public let timing: ControlTiming

  public init(controller: String, timing: ControlTiming = .init()) throws(FieldError) {
    let address = try SocketAddress.parse(controller, flag: "--controller")
    self.host = address.host
    self.port = Int(address.port)
    self.timing = timing
    self.state = Mutex(ControlLinkStatus(controller: controller))
  }

  public var status: ControlLinkStatus { state.withLock { $0 } }

  public func update(_ body: (inout ControlLinkStatus) -> Void) { state.withLock { body(&$0) } }

  func heard() { update { $0.lastHeardMs = nowMs() } }
}
