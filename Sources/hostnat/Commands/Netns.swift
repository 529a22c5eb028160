import HostnatAddressing
import ArgumentParser
import Foundation
import HostnatDataplane
import HostnatNetns
import HostnatPackets

/// `hostnat netns`: the processes of namespaces mode (what `hostnat lab up --netns` starts).
struct NetnsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "netns",
    abstract: "Namespaces mode (Linux, root): a VM or the Internet as a network namespace with a TUN device bridged to hostnat.",
    subcommands: [NetnsVMCommand.self, NetnsInternetCommand.self])
}

struct NetnsVMCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vm",
    abstract: "A VM as a namespace: its kernel's packets go to the host agent over the Geneve underlay (VNI 1), as an emulated VM's do.",
    discussion: "Runs until SIGTERM, then removes the namespace and its device.")

  @Option(help: "Namespace to create (it must not exist).") var namespace: String
  @Option(help: "The VM's address and its subnet's prefix, e.g. 10.240.0.2/20.") var address: String
  @Option(help: "The host agent's underlay address.") var agent: SocketAddress
  @Option(help: "Interface MTU (leaves room for the encapsulation).") var mtu: Int = PathMTU.vmMTU

  func run() async throws {
    let (ip, prefix) = try parseAddress(address)
    let vm: BridgedNamespace
    do {
      vm = try BridgedNamespace.vm(namespace: namespace, address: ip, prefixLength: prefix, agent: agent, mtu: mtu)
    } catch {
      throw netnsFailure("\(error)")
    }
    try await serve(vm, role: "netns-vm", ready: "netns vm \(namespace) \(address) mtu \(mtu) underlay \(vm.underlayAddress) agent \(agent)")
  }
}

struct NetnsInternetCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "internet",
    abstract: "The Internet as a namespace: public addresses real servers can listen on, reached through the edge (its --uplink, VNI 2).",
    discussion: "Runs until SIGTERM, then removes the namespace and its device.")

  @Option(help: "Namespace to create (it must not exist).") var namespace: String
  @Option(help: "The namespace's own address, e.g. 192.0.2.100/32.") var address: String
  @Option(help: "More addresses servers listen on (repeatable; /32 each).") var serverIP: [String] = []
  @Option(help: "The edge's underlay address.") var edge: SocketAddress
  @Option(help: "This bridge's underlay address (what the edge's --uplink names); port 0 picks one.")
  var underlay: SocketAddress = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0)

  func run() async throws {
    let (ip, prefix) = try parseAddress(address)
    let extra = try serverIP.map { text -> IPv4Address in
      guard let a = IPv4Address(text) else { throw netnsFailure("--server-ip: \(text) is not an IPv4 address") }
      return a
    }
    let inet: BridgedNamespace
    do {
      inet = try BridgedNamespace.internet(
        namespace: namespace, address: ip, prefixLength: prefix, serverAddresses: extra, edge: edge,
        underlayIP: underlay.ip, underlayPort: underlay.port)
    } catch {
      throw netnsFailure("\(error)")
    }
    try await serve(
      inet, role: "netns-internet",
      ready: "netns internet \(namespace) \(([address] + serverIP).joined(separator: " ")) underlay \(inet.underlayAddress) edge \(edge)")
  }
}

/// Runs a bridged namespace until SIGTERM or SIGINT, then removes it.
func serve(_ bridged: BridgedNamespace, role: String, ready: String) async throws {
  bridged.start()
  say(ready)
  try await runRole(role) {
    while !Task.isCancelled { try? await Task.sleep(for: .seconds(1)) }
  }
  try? bridged.shutdown()
  say("\(role.replacingOccurrences(of: "-", with: " ")) \(bridged.namespace) removed")
}

func parseAddress(_ text: String) throws -> (IPv4Address, Int) {
  let parts = text.split(separator: "/")
  guard parts.count == 2, let ip = IPv4Address(String(parts[0])), let prefix = Int(parts[1]), (1...32).contains(prefix) else {
    throw netnsFailure("--address: \(text) is not IPv4/PREFIX (e.g. 10.240.0.2/20)")
  }
  return (ip, prefix)
}

/// Unbuffered, so the line is in the lab's log file at once.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func netnsFailure(_ reason: String) -> ExitCode {
  FileHandle.standardError.write(Data("hostnat netns: \(reason)\n".utf8))
  return ExitCode(2)
}
