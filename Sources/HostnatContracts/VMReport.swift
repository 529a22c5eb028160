import HostnatAddressing
public import HostnatWorkload

/// The few numbers the lab reads from a VM's report, computed by the VM itself.
public struct VMSummary: Codable, Sendable, Equatable {
  public var sent: UInt64 = 0
  public var received: UInt64 = 0
  /// No reply within the loss timeout, including `late` ones.
  public var lost: UInt64 = 0
  /// Counted in `lost`, but the reply came after all: delayed, not lost.
  public var late: UInt64 = 0
  public var inFlight: UInt64 = 0
  /// The NAT IP:port the what-is-my-IP server saw last ("" when none).
  public var latestMapping: String = ""
  public var tcpEstablished: UInt64 = 0
  public var tcpBroken: UInt64 = 0
  public var churnAttempted: UInt64 = 0
  public var churnSucceeded: UInt64 = 0
  public var churnFailed: UInt64 = 0
  /// Whether whoami and STUN, reached from one source port, saw the same NAT IP:port (nil: not both seen).
  public var eimSameMapping: Bool?
  public var probeAcks: UInt64 = 0
  public var unsolicited: UInt64 = 0

  public init() {}

  public init(_ report: WorkloadReport) {
    for flow in report.flows {
      sent += UInt64(flow.sent)
      received += UInt64(flow.received)
      lost += UInt64(flow.lost)
      late += UInt64(flow.late)
      inFlight += UInt64(flow.inFlight)
      unsolicited += UInt64(flow.unsolicited)
      if let tcp = flow.tcp {
        tcpEstablished += UInt64(tcp.established)
        tcpBroken += UInt64(tcp.broken)
      }
      if let churn = flow.churn {
        churnAttempted += UInt64(churn.attempted)
        churnSucceeded += UInt64(churn.succeeded)
        churnFailed += UInt64(churn.failed)
      }
      if flow.kind == .filteringProbe { probeAcks += UInt64(flow.received) }
    }
    let whoami = report.flows.first { $0.kind == .whoami }
    let stun = report.flows.first { $0.kind == .stun }
    latestMapping = whoami?.latestMapping ?? stun?.latestMapping ?? ""
    if let w = whoami?.mappings, let s = stun?.mappings, !w.isEmpty, !s.isEmpty {
      eimSameMapping = Set(w) == Set(s)
    }
  }
}

/// What a VM process writes to its report file every second and when it stops.
public struct VMReportFile: Codable, Sendable {
  public var hostID: String
  public var name: String
  public var ip: String
  public var pid: Int32
  public var writtenMs: Int64
  public var summary: VMSummary
  public var report: WorkloadReport

  public init(hostID: String, name: String, ip: String, pid: Int32, writtenMs: Int64, summary: VMSummary, report: WorkloadReport) {
    self.hostID = hostID
    self.name = name
    self.ip = ip
    self.pid = pid
    self.writtenMs = writtenMs
    self.summary = summary
    self.report = report
  }
}
