/** A small typed event emitter (the client has no runtime dependencies). */
export class Emitter<M extends object> {
  private readonly listeners = new Map<keyof M, Set<(value: never) => void>>();

  /** Adds a listener; the returned function removes it. */
  on<K extends keyof M>(name: K, listener: (value: M[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener as (value: never) => void);
    return () => this.off(name, listener);
  }

  /** Adds a listener that is removed after its first call. */
  once<K extends keyof M>(name: K, listener: (value: M[K]) => void): () => void {
    const off = this.on(name, (v) => {
      off();
      listener(v);
    });
    return off;
  }

  off<K extends keyof M>(name: K, listener: (value: M[K]) => void): void {
    this.listeners.get(name)?.delete(listener as (value: never) => void);
  }

  listenerCount<K extends keyof M>(name: K): number {
    return this.listeners.get(name)?.size ?? 0;
  }

  protected emit<K extends keyof M>(name: K, value: M[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const l of [...set]) {
      try {
        (l as (value: M[K]) => void)(value);
      } catch (e) {
        // A throwing listener must not break the connection's message handling;
        // rethrow outside it, as EventTarget does, so the app still sees it.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
