//! The real terminal: raw mode and the alternate screen, given back on every way out (return,
//! error, panic, a signal to stop), and the loop that turns key presses and the clock into
//! commands.

use std::io::{IsTerminal as _, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use sqlx::PgConnection;
use tokio::time::Instant;

use super::{App, Command, Error, Source, Theme, execute, view};

/// In debug builds, set to anything: the first key press panics (for the tests).
const TEST_PANIC: &str = "PGLOCK_TOP_TEST_PANIC";

/// How the view runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Between two refreshes.
    pub interval: Duration,
    /// Colour or not.
    pub theme: Theme,
}

/// How the view ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// By a key (`q`, Ctrl-C), or its input closing.
    Quit,
    /// By this signal (`SIGTERM`, `SIGHUP`, or a `SIGINT` sent with `kill`: in raw mode Ctrl-C
    /// is a key), its number. The terminal was given back all the same; the command then exits
    /// as a process killed by it would be reported, with 128 + the number.
    Signal(i32),
}

/// Run the view on this process's terminal until `q` or Ctrl-C, or a signal to stop.
///
/// # Errors
/// [`Error::NotATerminal`] when standard output is not one; [`Error::Terminal`] when it cannot
/// be set up or drawn on, or the signals to stop cannot be listened for; [`Error::Database`]
/// when the first read fails (later failures are shown on the screen, and the view goes on).
///
/// # Cancel safety
/// Not cancel-safe: dropped while signalling, a signal may have gone out unreported. The
/// terminal is given back in any case.
pub async fn run(mut conn: PgConnection, source: Source, options: Options) -> Result<Ended, Error> {
    if !std::io::stdout().is_terminal() {
        return Err(Error::NotATerminal);
    }
    // Listened for before the screen changes: the default action of each would end the
    // process with the terminal still raw and on the alternate screen.
    let mut stops = Stops::new()?;
    let own_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await?;
    let mut app = App::new(own_pid, options.interval);
    app.update(source.snapshot(&mut conn).await?);

    let mut screen = Screen::enter()?;
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    // crossterm's reads block: a thread of their own, handing events to the loop. It ends with
    // the process.
    std::thread::spawn(move || {
        loop {
            let event = event::read();
            let failed = event.is_err();
            if sender.send(event).is_err() || failed {
                break;
            }
        }
    });
    let mut next = Instant::now() + options.interval;
    // Debug builds only: the tests' way to see the panic hook give the terminal back.
    let panic_on_key = cfg!(debug_assertions) && std::env::var_os(TEST_PANIC).is_some();
    loop {
        screen
            .terminal
            .draw(|frame| view::draw(frame, &app, options.theme))?;
        let command = tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Event::Key(_))) if panic_on_key => panic!("{TEST_PANIC} is set"),
                Some(Ok(Event::Key(key))) => app.on_key(key),
                // A resize, or anything else: drawn again.
                Some(Ok(_)) => None,
                Some(Err(error)) => return Err(error.into()),
                None => Some(Command::Quit),
            },
            () = tokio::time::sleep_until(next), if !app.paused() => Some(Command::Refresh),
            signal = stops.next() => {
                screen.leave()?;
                return Ok(Ended::Signal(signal));
            }
        };
        let Some(command) = command else {
            continue;
        };
        if command == Command::Refresh || matches!(command, Command::Signal { .. }) {
            next = Instant::now() + options.interval;
        }
        if !execute(&mut conn, &source, &mut app, command).await {
            break;
        }
    }
    screen.leave()?;
    Ok(Ended::Quit)
}

/// The signals that stop the view.
#[cfg(unix)]
struct Stops {
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Stops {
    fn new() -> std::io::Result<Stops> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Stops {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The number of the next one to arrive.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.terminate.recv() => 15,
            _ = self.hangup.recv() => 1,
            _ = self.interrupt.recv() => 2,
        }
    }
}

/// Elsewhere, only keys stop the view.
#[cfg(not(unix))]
struct Stops;

#[cfg(not(unix))]
impl Stops {
    fn new() -> std::io::Result<Stops> {
        Ok(Stops)
    }

    async fn next(&mut self) -> i32 {
        std::future::pending().await
    }
}

/// The terminal in raw mode on the alternate screen, for as long as this lives.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        install_panic_hook();
        enable_raw_mode()?;
        ENTERED.store(true, Ordering::SeqCst);
        let entered = execute!(std::io::stdout(), EnterAlternateScreen)
            .and_then(|()| Terminal::new(CrosstermBackend::new(std::io::stdout())))
            .and_then(|mut terminal| terminal.hide_cursor().map(|()| terminal));
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }

    /// Give the terminal back, saying if that failed (dropping does it silently).
    fn leave(mut self) -> std::io::Result<()> {
        if !ENTERED.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.terminal.show_cursor()?;
        disable_raw_mode()?;
        execute!(std::io::stdout(), LeaveAlternateScreen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Whether the terminal is in raw mode on the alternate screen, to be given back once: leaving
/// the alternate screen also puts the cursor back where it was on entering, so doing it again
/// after a panic's message would put the shell's prompt over the message.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Leave raw mode and the alternate screen, show the cursor, once; errors ignored (there is
/// nowhere to report them, and each step is worth trying).
fn restore() {
    if !ENTERED.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// On a panic, give the terminal back before the message is printed, so that it is readable
/// and the shell usable.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
