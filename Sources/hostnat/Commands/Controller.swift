import ArgumentParser
import Foundation
import HostnatAdminCLI
import HostnatController
import Logging

/// `hostnat controller`: the controller process (admin API and control streams) until SIGTERM.
struct ControllerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "controller",
    abstract: "Run the controller: durable intent in SQLite, the admin API, and config pushes to hosts.")

  @Option(help: "Directory of the controller database (created if missing).")
  var dataDir: String

  @Option(help: "Address to serve gRPC on, HOST:PORT (port 0: pick a free one).")
  var listen = "127.0.0.1:7400"

  @Option(help: "Region's auto-allocation pool REGION=CIDR (repeatable; default us-central1=198.51.100.0/25, us-east1=198.51.100.128/25).")
  var autoNatPool: [String] = []

  @Option(help: "Serve Prometheus metrics (/metrics, /healthz) on HOST:PORT (port 0: any).")
  var metrics: String?

  @Option(help: "Append every control message sent and received to FILE as a JSON line (read it with `hostnat trace show`).")
  var traceControl: String?

  @Option(help: "Control-stream heartbeat interval in milliseconds.")
  var heartbeatMs = 1000

  @Option(help: "What hosts do while they cannot reach the controller: fail-static (keep translating; blocks move only after an ACK or `hosts forget`) or lease (stop new mappings at the lease minus the margin, end flows at the lease; blocks may then move).")
  var fencing = "fail-static"

  @Option(help: "Lease mode: the ownership lease in seconds (default: the longest idle timeout of any gateway plus 60 s).")
  var leaseSec: UInt32?

  @Option(help: "Lease mode: how many seconds before the lease runs out hosts stop making new mappings.")
  var fenceMarginSec: UInt32 = 2

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
  var logLevel = "info"

  func run() async throws {
    guard let level = Logger.Level(rawValue: logLevel) else {
      throw CommandError(flag: "--log-level", reason: "\"\(logLevel)\" is not trace, debug, info, notice, warning, error or critical")
        .exit("hostnat controller:", status: 2)
    }
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "hostnat.controller")
    do {
      guard (10...600_000).contains(heartbeatMs) else {
        throw ControllerStartError.badOption(option: "--heartbeat-ms", reason: "\(heartbeatMs) is not within 10...600000")
      }
      let (host, port) = try ControllerOptions.parseListen(listen)
      let pools = autoNatPool.isEmpty ? ControllerOptions.defaultAutoPools : try ControllerOptions.parseAutoPools(autoNatPool)
      var options = ControllerOptions(
        dataDirectory: dataDir, host: host, port: port, autoPools: pools, heartbeat: .milliseconds(heartbeatMs))
      options.traceControl = traceControl
      guard let mode = FencingMode(rawValue: fencing) else {
        throw ControllerStartError.badOption(option: "--fencing", reason: "\"\(fencing)\" is not fail-static or lease")
      }
      if let leaseSec, !(1...86_400).contains(leaseSec) {
        throw ControllerStartError.badOption(option: "--lease-sec", reason: "\(leaseSec) is not within 1...86400")
      }
      if let leaseSec, fenceMarginSec >= leaseSec {
        throw ControllerStartError.badOption(option: "--fence-margin-sec", reason: "\(fenceMarginSec) must be below the lease (\(leaseSec) s)")
      }
      options.fencing = FencingPolicy(mode: mode, leaseSec: leaseSec, marginSec: fenceMarginSec)
      if let metrics {
        let (metricsHost, metricsPort) = try ControllerOptions.parseListen(metrics, flag: "--metrics")
        options.metrics = (metricsHost, metricsPort)
      }
      let dataDir = self.dataDir
      try await ControllerServer(options: options, logger: logger).run { host, port in
        // The lab and the tests wait for exactly this line.
        FileHandle.standardOutput.write(Data("controller listening on \(host):\(port) data-dir \(dataDir)\n".utf8))
      }
    } catch let error as ControllerStartError {
      throw CommandError(.startFailed, error.description, cause: error).exit("hostnat controller:", status: 2)
    }
  }
}
