internal import Glibc
internal import Synchronization

/// A dedicated OS thread for one packet loop (pthreads: the loops block in recvmmsg and must not sit
/// on the cooperative pool). The body polls `stopRequested` between receives; `stop` is bounded.
package final class LoopThread: Sendable {
  let stopRequested = Atomic<Bool>(false)
  private let finished = Atomic<Bool>(false)
  private let handle = Mutex<pthread_t?>(nil)

  private final class Box {
    let body: @Sendable (LoopThread) -> Void
    let thread: LoopThread
    init(_ body: @escaping @Sendable (LoopThread) -> Void, _ thread: LoopThread) {
      self.body = body
      self.thread = thread
    }
  }

  /// pthread_setname_np sits behind _GNU_SOURCE in glibc's headers, like recvmmsg.
  private static let setName: (@convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32)? = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "pthread_setname_np") else { return nil }
    return unsafeBitCast(sym, to: (@convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32).self)
  }()

  /// Starts `body` on a new thread named `name` (at most 15 bytes are kept).
  package static func spawn(name: String, _ body: @escaping @Sendable (LoopThread) -> Void) -> LoopThread {
    let t = LoopThread()
    let box = Unmanaged.passRetained(Box(body, t)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(
      &tid, nil,
      { ctx in
        let box = Unmanaged<Box>.fromOpaque(ctx!).takeRetainedValue()
        box.body(box.thread)
        box.thread.finished.store(true, ordering: .releasing)
        return nil
      }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    if let setName = Self.setName { _ = String(name.utf8.prefix(15))!.withCString { setName(tid, $0) } }
    t.handle.withLock { $0 = tid }
    return t
  }

  /// Asks the body to return and waits up to `timeout` for it. True when the thread ended and was
  /// joined; false when it is still running (it is then detached and will end on its own).
  @discardableResult
  package func stop(timeout: Duration = .seconds(5)) -> Bool {
    stopRequested.store(true, ordering: .releasing)
    guard let tid = handle.withLock({ h -> pthread_t? in
      let t = h
      h = nil
      return t
    }) else { return true }
    let steps = max(1, Int(timeout.components.seconds) * 1000 + Int(timeout.components.attoseconds / 1_000_000_000_000_000))
    for _ in 0..<steps where !finished.load(ordering: .acquiring) {
      usleep(1000)
    }
    if finished.load(ordering: .acquiring) {
      pthread_join(tid, nil)
      return true
    }
    pthread_detach(tid)
    return false
  }

  package var shouldStop: Bool { stopRequested.load(ordering: .relaxed) }
}

/// A loop's thread slot, shared by the agent, edge and VM loops and the namespace bridges: `start`
/// spawns the thread once, `stop` joins it (bounded, idempotent).
package final class LoopHandle: Sendable {
  private let thread = Mutex<LoopThread?>(nil)

  package init() {}

  package func start(name: String, _ body: @escaping @Sendable (LoopThread) -> Void) {
    thread.withLock { t in
      guard t == nil else { return }
      t = LoopThread.spawn(name: name, body)
    }
  }

  package func stop(timeout: Duration) {
    let t = thread.withLock { t -> LoopThread? in
      defer { t = nil }
      return t
    }
    t?.stop(timeout: timeout)
  }
}
