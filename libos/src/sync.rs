//! Blocking synchronization built on the scheduler's wait queues: a mutex and a
//! channel. (Short, irq-safe critical sections use spinning_top directly.)

use alloc::collections::VecDeque;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::irqflags::IrqGuard;
use crate::sched::{WaitQueue, block_on_unless};

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
