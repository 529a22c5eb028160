import HostnatAddressing
import ArgumentParser
import HostnatContracts
import HostnatDataplane
import HostnatVM
import HostnatPackets

struct VMCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vm",
    abstract: "Run a VM workload behind a host agent: UDP, TCP and ICMP flows to the Internet's servers, every reply checked.")

  @Option(help: "The host the VM runs on.") var hostId: String
  @Option(help: "The VM's name.") var name: String
  @Option(help: "The VM's primary IP.") var ip: IPv4Address
  @Option(help: "The host agent's underlay address.") var agent: SocketAddress
  @Option(help: "The VM's own underlay address (port 0: any).") var underlay: SocketAddress = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0)
  @Option(help: "Where to write the report (JSON), every second and at exit.") var report: String
  @Option(help: "An Internet server: IP=SERVICE,... Repeatable; default: the lab's three.") var server: [String] = []
  @Option(help: "UDP echo datagrams per second.") var udpPps: Double = 20
  @Option(help: "New TCP connections per second.") var tcpChurnPerSec: Double = 4
  @Option(help: "Pings per second.") var pingPps: Double = 5

  func run() async throws {
    var options = VMOptions(hostID: hostId, name: name, ip: ip, agent: agent, reportPath: report)
    options.underlay = underlay
    if !server.isEmpty { options.servers = try server.map { try ServiceNames.parseServer($0) } }
    options.udpPps = udpPps
    options.tcpChurnPerSec = tcpChurnPerSec
    options.pingPps = pingPps
    let vm = try VMNode(options: options)
    print("vm \(name) \(ip) on \(hostId) via agent \(agent)")
    try await runRole("vm", vm)
    let summary = VMSummary(vm.report)
    print("vm \(name) stopped: sent \(summary.sent) received \(summary.received) lost \(summary.lost)")
  }
}
