//! Synchronization: a mutex and a channel built on the scheduler's wait queues (their
//! waiters sleep), and an irq-safe spin lock for short critical sections.

use alloc::collections::VecDeque;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::irqflags::IrqGuard;
use crate::sched::{WaitQueue, block_on_unless};

/// A spin lock for short critical sections that interrupt handlers may share: locking
/// disables interrupts on this CPU first (a task preempted while holding it would
/// otherwise leave a higher-priority spinner, or an interrupt handler, spinning
/// forever), then spins. The guard gives both back in reverse order on drop.
#[derive(Debug, Default)]
pub struct SpinLock<T> {
    inner: spinning_top::Spinlock<T>,
}

impl<T> SpinLock<T> {
    /// A new, unlocked spin lock.
    pub const fn new(value: T) -> Self {
        SpinLock {
            inner: spinning_top::Spinlock::new(value),
        }
    }

    /// Disables interrupts, then spins until the lock is free.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let irqs = IrqGuard::new();
        SpinLockGuard {
            inner: self.inner.lock(),
            _irqs: irqs,
        }
    }
}

/// Access to the data of a locked [`SpinLock`]; interrupts stay off while it lives.
/// (Field order matters: the lock is released before interrupts come back on.)
pub struct SpinLockGuard<'a, T> {
    inner: spinning_top::guard::SpinlockGuard<'a, T>,
    _irqs: IrqGuard,
}

impl<T: core::fmt::Debug> core::fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("SpinLockGuard").field(&*self.inner).finish()
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A mutex whose waiters sleep instead of spinning.
#[derive(Debug, Default)]
pub struct Mutex<T> {
    locked: AtomicBool,
    waiters: WaitQueue,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by `locked` (only the MutexGuard holder touches
// it), so sharing the mutex is safe when T may move between tasks.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above; the mutex owns its T.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        Mutex {
            locked: AtomicBool::new(false),
            waiters: WaitQueue::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Locks, sleeping while another task holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        loop {
            let irqs = IrqGuard::new();
            if !self.locked.swap(true, Ordering::Acquire) {
                return MutexGuard { mutex: self };
            }
            // Re-checked once we are a waiter: an unlock on another CPU in between found
            // no one to wake.
            block_on_unless(&irqs.token(), &self.waiters, || {
                !self.locked.load(Ordering::Acquire)
            });
        }
    }
}

/// Access to the data of a locked [`Mutex`].
#[derive(Debug)]
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no one else accesses the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock exclusively.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.locked.store(false, Ordering::Release);
        self.mutex.waiters.wake_one();
    }
}

/// An unbounded multi-producer, multi-consumer channel; `recv` sleeps while empty.
#[derive(Debug, Default)]
pub struct Channel<T> {
    queue: spinning_top::Spinlock<VecDeque<T>>,
    receivers: WaitQueue,
}

impl<T> Channel<T> {
    /// An empty channel.
    pub const fn new() -> Self {
        Channel {
            queue: spinning_top::Spinlock::new(VecDeque::new()),
            receivers: WaitQueue::new(),
        }
    }

    /// Sends a value (never blocks; callable from interrupt context).
    pub fn send(&self, value: T) {
        let irqs = IrqGuard::new();
        self.queue.lock().push_back(value);
        self.receivers.wake_one();
        drop(irqs);
    }

    /// Receives the oldest value, sleeping until there is one.
    pub fn recv(&self) -> T {
        loop {
            let irqs = IrqGuard::new();
            if let Some(v) = self.queue.lock().pop_front() {
                return v;
            }
            block_on_unless(&irqs.token(), &self.receivers, || {
                !self.queue.lock().is_empty()
            });
        }
    }
}
