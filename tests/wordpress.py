"""A fresh, real WordPress for tests, with the Switchboard connector plugin installed and activated.

    with wordpress_site(tmp_path) as site:
        erin = site.create_user("erin", "editor", "Erin Editor")
        post = site.create_post("erin", "New canteen hours", categories=["News"])
        site.configure_switchboard(receiver.url, "whsec_...")
        comment = site.post_comment(post, "Will it open earlier?", as_login="erin")   # REST, as that user
        site.set_status(comment, "hold")
        site.run_cron(expire_backoff=True)                                               # retries due now

Async tests use `async with async_wordpress_site(tmp_path) as site:`: the same methods as coroutines, each run
in a thread, so that a Switchboard served on the test's own event loop can answer the deliveries WordPress makes
while a request is under way.

What it is: WordPress as Debian packages it (`/usr/share/wordpress`, override with SWITCHBOARD_TEST_WORDPRESS_DIR)
laid out in a temp dir (top-level scripts and wp-admin copied, since they find wp-config.php through their own real
path; wp-includes and the default theme symlinked), with its own wp-config.php: a fresh MariaDB database
`wp_test_<random>` (SWITCHBOARD_TEST_MARIADB_URL, default mysql://root@127.0.0.1:3306; dropped at the end),
WP_ENVIRONMENT_TYPE `local` (Application Passwords over http), pretty permalinks (`/wp-json/...` works),
DISABLE_WP_CRON (nothing runs behind the test's back: `run_cron()` requests wp-cron.php, which is what a site driven
by a system cron does), WP_HTTP_BLOCK_EXTERNAL (no waiting on api.wordpress.org; 127.0.0.1 and localhost stay
reachable, so deliveries to a local receiver or Switchboard go through) and WP_DEBUG_LOG to `debug_log`. A must-use
plugin turns off outgoing mail and comment flood control (tests post comments seconds apart); comment moderation
rules are WordPress's defaults (a non-moderator's first comment is held). PHP's built-in server serves it on
127.0.0.1 at a free port with two workers. Like mod_php, it finishes a response only after the plugin's deliveries
at `shutdown`: when a call here returns, the events it caused have been delivered or queued. Missing `php`,
php-mysql, the `wordpress` package or MariaDB skips the test (`tests.conftest.unavailable`; a failure under
SWITCHBOARD_TEST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import unavailable
from tests.processes import ROOT, free_port

WORDPRESS_DIR = Path(os.environ.get("SWITCHBOARD_TEST_WORDPRESS_DIR", "/usr/share/wordpress"))
MARIADB_URL = os.environ.get("SWITCHBOARD_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306")
PLUGIN_DIR = ROOT / "integrations" / "wordpress" / "switchboard-connector"
PLUGIN = "switchboard-connector/switchboard-connector.php"
_RESULT = "\n__SWITCHBOARD_RESULT__"

# Loaded before any plugin: no mail (there is no MTA), no flood control (tests comment seconds apart).
_MU_PLUGIN = """<?php
/* Test site only (tests/wordpress.py). */
add_filter( 'pre_wp_mail', '__return_true' );
add_filter( 'wp_is_comment_flood', '__return_false', PHP_INT_MAX );
"""

# PHP's built-in server: existing files are served (and .php files run) as they are; everything else is
# WordPress's front controller, as Apache's rewrite rules would have it.
_ROUTER = """<?php
$root = $_SERVER['DOCUMENT_ROOT'];
$path = urldecode( (string) parse_url( $_SERVER['REQUEST_URI'], PHP_URL_PATH ) );
if ( '/' !== $path && ( is_file( $root . $path ) || is_file( rtrim( $root . $path, '/' ) . '/index.php' ) ) ) {
    return false;
}
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $root . '/index.php';
$_SERVER['PHP_SELF'] = '/index.php';
chdir( $root );
require $root . '/index.php';
"""


@dataclass(frozen=True, slots=True)
class _Database:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> _Database:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 3306, parts.username or "root", parts.password or "")


def _php_binary() -> str:
    binary = shutil.which("php")
    if binary is None:
        unavailable("PHP (Debian package php-cli)", "no `php` on PATH")
        raise AssertionError("unreachable")
    return binary


def _mysql_admin(php: str, database: _Database, statement: str) -> str | None:
    """Run one statement on the server (no database selected) through PHP's mysqli; the problem, or None."""
    script = """
mysqli_report( MYSQLI_REPORT_OFF );
$a = json_decode( getenv( 'SB_DB' ), true );
if ( ! function_exists( 'mysqli_connect' ) ) {
    fwrite( STDERR, 'PHP has no mysqli (Debian package php-mysql)' );
    exit( 2 );
}
$db = @mysqli_connect( $a['host'], $a['user'], $a['password'], '', (int) $a['port'] );
if ( ! $db ) { fwrite( STDERR, mysqli_connect_error() ); exit( 3 ); }
if ( '' !== $a['sql'] && ! mysqli_query( $db, $a['sql'] ) ) { fwrite( STDERR, mysqli_error( $db ) ); exit( 4 ); }
"""
    env = {
        **os.environ,
        "SB_DB": json.dumps(
            {
                "host": database.host,
                "port": database.port,
                "user": database.user,
                "password": database.password,
                "sql": statement,
            }
        ),
    }
    done = subprocess.run(  # noqa: S603  (our own script)
        [php, "-r", script], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return None if done.returncode == 0 else (done.stderr.strip() or f"php exited with {done.returncode}")


def _check_available(php: str, database: _Database) -> None:
    if not (WORDPRESS_DIR / "wp-settings.php").is_file():
        unavailable("WordPress (Debian package wordpress)", f"no {WORDPRESS_DIR}/wp-settings.php")
    problem = _mysql_admin(php, database, "")
    if problem is not None:
        what = "php-mysql" if "mysqli" in problem else f"MariaDB at {database.host}:{database.port}"
        unavailable(what, problem)


def _lay_out(root: Path) -> None:
    """WordPress core from the Debian package: scripts and wp-admin copied, wp-includes and the theme linked."""
    root.mkdir(parents=True)
    for entry in WORDPRESS_DIR.iterdir():
        if entry.name in {"wp-config.php", ".htaccess", "wp-content"}:
            continue
        if entry.name == "wp-includes":
            (root / entry.name).symlink_to(entry)
        elif entry.is_dir():
            shutil.copytree(entry, root / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, root / entry.name)
    content = root / "wp-content"
    for folder in ("plugins", "themes", "uploads", "mu-plugins"):
        (content / folder).mkdir(parents=True)
    for theme in (WORDPRESS_DIR / "wp-content" / "themes").iterdir():
        (content / "themes" / theme.name).symlink_to(theme)
    shutil.copytree(PLUGIN_DIR, content / "plugins" / PLUGIN_DIR.name)
    (content / "mu-plugins" / "switchboard-test-site.php").write_text(_MU_PLUGIN)


def _wp_config(database: _Database, name: str, url: str, debug_log: Path) -> str:
    def php_string(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    keys = "".join(
        f"define( '{key}', {php_string(secrets.token_urlsafe(48))} );\n"
        for key in (
            "AUTH_KEY",
            "SECURE_AUTH_KEY",
            "LOGGED_IN_KEY",
            "NONCE_KEY",
            "AUTH_SALT",
            "SECURE_AUTH_SALT",
            "LOGGED_IN_SALT",
            "NONCE_SALT",
        )
    )
    return f"""<?php
/* A test site made by tests/wordpress.py. */
define( 'DB_NAME', {php_string(name)} );
define( 'DB_USER', {php_string(database.user)} );
define( 'DB_PASSWORD', {php_string(database.password)} );
define( 'DB_HOST', {php_string(f"{database.host}:{database.port}")} );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
{keys}$table_prefix = 'wp_';
define( 'WP_HOME', {php_string(url)} );
define( 'WP_SITEURL', {php_string(url)} );
define( 'WP_ENVIRONMENT_TYPE', 'local' );
define( 'DISABLE_WP_CRON', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_AUTO_UPDATE_CORE', false );
define( 'FS_METHOD', 'direct' );
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_DISPLAY', false );
define( 'WP_DEBUG_LOG', {php_string(str(debug_log))} );
if ( ! defined( 'ABSPATH' ) ) {{
    define( 'ABSPATH', __DIR__ . '/' );
}}
require_once ABSPATH . 'wp-settings.php';
"""


_INSTALL = """
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
$installed = wp_install(
    'Switchboard test site', $args['admin'], $args['admin'] . '@example.com', true, '', wp_slash( $args['password'] )
);
update_option( 'permalink_structure', '/%postname%/' );
update_option( 'blogdescription', 'Comments for Switchboard tests' );
$activated = activate_plugin( $args['plugin'] );
if ( is_wp_error( $activated ) ) {
    throw new RuntimeException( 'activating the plugin failed: ' . $activated->get_error_message() );
}
$password = WP_Application_Passwords::create_new_application_password(
    $installed['user_id'], array( 'name' => 'tests' )
);
if ( is_wp_error( $password ) ) {
    throw new RuntimeException( $password->get_error_message() );
}
return array( 'user_id' => $installed['user_id'], 'application_password' => $password[0] );
"""

# Make Switchboard's retries due now, as though their backoff had passed: the queue rows and the plugin's cron
# events (WordPress's own cron events keep their times).
_EXPIRE_BACKOFF = """
global $wpdb;
$now = time();
$wpdb->query( $wpdb->prepare(
    "UPDATE {$wpdb->prefix}switchboard_queue SET next_attempt_at = %d
     WHERE status = 'pending' AND next_attempt_at > %d",
    $now - 1,
    $now - 1
) );
$crons = _get_cron_array();
$moved = array();
foreach ( $crons as $timestamp => $hooks ) {
    foreach ( array( 'switchboard_drain_queue', 'switchboard_retry_queue' ) as $hook ) {
        if ( isset( $hooks[ $hook ] ) && $timestamp > $now - 1 ) {
            $moved[ $hook ] = ( $moved[ $hook ] ?? array() ) + $hooks[ $hook ];
            unset( $crons[ $timestamp ][ $hook ] );
            if ( ! $crons[ $timestamp ] ) { unset( $crons[ $timestamp ] ); }
        }
    }
}
foreach ( $moved as $hook => $events ) {
    $crons[ $now - 1 ][ $hook ] = $events;
}
ksort( $crons );
_set_cron_array( $crons );
return count( $moved );
"""


@dataclass
class WordPressSite:
    """A running WordPress (see the module docstring); every method blocks until WordPress has answered."""

    url: str
    root: Path
    database: str
    admin_user: str
    admin_password: str
    debug_log: Path
    server_log: Path
    _php: str
    _workdir: Path
    _user_ids: dict[str, int] = field(default_factory=dict)
    _app_passwords: dict[str, str] = field(default_factory=dict)
    _scripts: int = 0

    # ---- PHP in the site's context ----------------------------------------------------------------------

    def php(self, code: str, **args: Any) -> str:
        """Run PHP statements with WordPress loaded (wp-load.php, as WP-CLI does); `$args` holds `args`.

        Returns what the code printed. Events the code causes are sent at the script's end, as in any request.
        """
        return self._run_php(code, args)[0]

    def call(self, code: str, **args: Any) -> Any:
        """Run PHP statements ending in `return <value>;` and give that value back (as JSON)."""
        return self._run_php(code, args)[1]

    def _run_php(self, code: str, args: dict[str, Any], *, installing: bool = False) -> tuple[str, Any]:
        host = urlsplit(self.url).netloc
        self._scripts += 1
        script = self._workdir / "php" / f"script-{self._scripts}.php"
        script.parent.mkdir(exist_ok=True)
        script.write_text(
            "<?php\n"
            f"$_SERVER['HTTP_HOST'] = '{host}';\n"
            "$_SERVER['SERVER_NAME'] = '127.0.0.1';\n"
            "$_SERVER['REQUEST_URI'] = '/';\n"
            "$_SERVER['REQUEST_METHOD'] = 'GET';\n"
            "define( 'WP_USE_THEMES', false );\n"
            + ("define( 'WP_INSTALLING', true );\n" if installing else "")
            + f"require '{self.root}/wp-load.php';\n"
            "$args = json_decode( (string) getenv( 'SWITCHBOARD_WP_ARGS' ), true ) ?: array();\n"
            "$switchboard_result = ( static function ( array $args ) {\n"
            f"{code}\n"
            "} )( $args );\n"
            f"echo {json.dumps(_RESULT)} . wp_json_encode( $switchboard_result );\n"
        )
        done = subprocess.run(  # noqa: S603  (our own script)
            [self._php, str(script)],
            env={**os.environ, "SWITCHBOARD_WP_ARGS": json.dumps(args)},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output, marker, result = done.stdout.rpartition(_RESULT)
        if done.returncode != 0 or not marker:
            raise RuntimeError(
                f"PHP failed ({done.returncode}):\n{code}\n--- stdout:\n{done.stdout[-3000:]}\n"
                f"--- stderr:\n{done.stderr[-3000:]}"
            )
        return output, json.loads(result)

    # ---- users, posts ------------------------------------------------------------------------------------

    def create_user(self, login: str, role: str, display_name: str, email: str | None = None) -> int:
        """A user with this role (subscriber, contributor, author, editor, administrator); their id."""
        user_id = self.call(
            """
$id = wp_insert_user( array(
    'user_login' => $args['login'], 'user_pass' => wp_generate_password( 24 ), 'role' => $args['role'],
    'display_name' => $args['display_name'], 'user_email' => $args['email'],
) );
if ( is_wp_error( $id ) ) { throw new RuntimeException( $id->get_error_message() ); }
return $id;
""",
            login=login,
            role=role,
            display_name=display_name,
            email=email or f"{login}@example.com",
        )
        self._user_ids[login] = int(user_id)
        return int(user_id)

    def user_id(self, login: str) -> int:
        """The id of a user by login."""
        if login not in self._user_ids:
            found = self.call("$u = get_user_by( 'login', $args['login'] ); return $u ? $u->ID : 0;", login=login)
            if not found:
                raise KeyError(f"no WordPress user {login!r}")
            self._user_ids[login] = int(found)
        return self._user_ids[login]

    def application_password(self, login: str) -> str:
        """A new Application Password for this user (what an admin creates for Switchboard under Users)."""
        password = str(
            self.call(
                """
$user = get_user_by( 'login', $args['login'] );
$created = WP_Application_Passwords::create_new_application_password(
    $user->ID, array( 'name' => 'switchboard-' . wp_generate_password( 6, false ) )
);
if ( is_wp_error( $created ) ) { throw new RuntimeException( $created->get_error_message() ); }
return $created[0];
""",
                login=login,
            )
        )
        self._app_passwords.setdefault(login, password)
        return password

    def create_post(
        self,
        author_login: str,
        title: str,
        categories: Sequence[str] = (),
        content: str = "A post for comments.",
        post_type: str = "post",
    ) -> int:
        """A published post by this user in these categories (created when missing); its id."""
        return int(
            self.call(
                """
$categories = array();
foreach ( $args['categories'] as $name ) {
    $term = term_exists( $name, 'category' );
    if ( ! $term ) { $term = wp_insert_term( $name, 'category' ); }
    if ( is_wp_error( $term ) ) { throw new RuntimeException( $term->get_error_message() ); }
    $categories[] = (int) $term['term_id'];
}
$id = wp_insert_post( array(
    'post_author' => get_user_by( 'login', $args['author'] )->ID, 'post_title' => $args['title'],
    'post_content' => $args['content'], 'post_status' => 'publish', 'post_type' => $args['type'],
    'post_category' => $categories, 'comment_status' => 'open',
), true );
if ( is_wp_error( $id ) ) { throw new RuntimeException( $id->get_error_message() ); }
return $id;
""",
                author=author_login,
                title=title,
                categories=list(categories),
                content=content,
                type=post_type,
            )
        )

    # ---- the REST API ------------------------------------------------------------------------------------

    def rest(
        self,
        method: str,
        route: str,
        *,
        as_login: str | None = None,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """A request to /wp-json<route>, with Basic auth by the user's Application Password (admin by default)."""
        login = as_login or self.admin_user
        if login not in self._app_passwords:
            self.application_password(login)
        with httpx.Client(base_url=self.url, timeout=60, auth=(login, self._app_passwords[login])) as client:
            return client.request(method, f"/wp-json{route}", json=json_body, params=params)

    def _rest_ok(self, method: str, route: str, **kwargs: Any) -> Any:
        response = self.rest(method, route, **kwargs)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {route}: {response.status_code} {response.text[:2000]}")
        return response.json()

    # ---- comments ----------------------------------------------------------------------------------------

    def post_comment(
        self,
        post_id: int,
        content: str,
        *,
        as_login: str | None = None,
        parent: int | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> int:
        """A comment as a real user makes one; its id.

        With `as_login`: POST /wp-json/wp/v2/comments as that user (`meta` goes along, as Switchboard sends it).
        Without: a guest submitting the comment form (wp-comments-post.php) with `author_name`/`author_email`.
        WordPress's moderation rules apply either way.
        """
        if as_login is not None:
            body: dict[str, Any] = {"post": post_id, "content": content, "parent": parent or 0}
            if meta:
                body["meta"] = meta
            return int(self._rest_ok("POST", "/wp/v2/comments", as_login=as_login, json_body=body)["id"])
        form = {
            "comment_post_ID": str(post_id),
            "comment_parent": str(parent or 0),
            "comment": content,
            "author": author_name or "",
            "email": author_email or "",
            "url": "",
            "submit": "Post Comment",
        }
        with httpx.Client(base_url=self.url, timeout=60) as client:
            response = client.post("/wp-comments-post.php", data=form)
        found = re.search(r"#comment-(\d+)", response.headers.get("location", ""))
        if response.status_code != 302 or found is None:
            raise RuntimeError(f"the comment form answered {response.status_code}: {response.text[:2000]}")
        return int(found.group(1))

    def comment(self, comment_id: int) -> dict[str, Any]:
        """The comment as the REST API shows it to an admin (context=edit: status, content.raw, meta, ...)."""
        found: dict[str, Any] = self._rest_ok("GET", f"/wp/v2/comments/{comment_id}", params={"context": "edit"})
        return found

    def comments(self, post_id: int, status: str = "all") -> list[dict[str, Any]]:
        """A post's comments, oldest first (status: all = approved and held, or approve, hold, spam, trash)."""
        params = {
            "post": post_id,
            "context": "edit",
            "status": status,
            "per_page": 100,
            "orderby": "id",
            "order": "asc",
        }
        found: list[dict[str, Any]] = self._rest_ok("GET", "/wp/v2/comments", params=params)
        return found

    def set_status(self, comment_id: int, status: str, *, as_login: str | None = None) -> dict[str, Any]:
        """Moderate: approved, hold, spam, unspam, trash, untrash (a same-status change is a 500 in WordPress)."""
        result: dict[str, Any] = self._rest_ok(
            "POST", f"/wp/v2/comments/{comment_id}", as_login=as_login, json_body={"status": status}
        )
        return result

    def edit_comment(self, comment_id: int, content: str, *, as_login: str | None = None) -> dict[str, Any]:
        """Change a comment's text."""
        result: dict[str, Any] = self._rest_ok(
            "POST", f"/wp/v2/comments/{comment_id}", as_login=as_login, json_body={"content": content}
        )
        return result

    def trash(self, comment_id: int, *, as_login: str | None = None) -> dict[str, Any]:
        """Move a comment to the trash (DELETE without force)."""
        result: dict[str, Any] = self._rest_ok("DELETE", f"/wp/v2/comments/{comment_id}", as_login=as_login)
        return result

    def delete(self, comment_id: int, *, as_login: str | None = None) -> dict[str, Any]:
        """Delete a comment for good (DELETE ?force=true)."""
        result: dict[str, Any] = self._rest_ok(
            "DELETE", f"/wp/v2/comments/{comment_id}", as_login=as_login, params={"force": "true"}
        )
        return result

    # ---- the plugin --------------------------------------------------------------------------------------

    def configure_switchboard(self, url: str, secret: str, delivery_timeout: int | None = None) -> None:
        """Set the plugin's options (as `update_option` from a deployment script would)."""
        self.call(
            """
update_option( 'switchboard_url', $args['url'] );
update_option( 'switchboard_secret', $args['secret'] );
if ( null !== $args['timeout'] ) { update_option( 'switchboard_timeout', $args['timeout'] ); }
return true;
""",
            url=url,
            secret=secret,
            timeout=delivery_timeout,
        )

    def queue(self) -> list[dict[str, Any]]:
        """The plugin's stored events (pending and failed), oldest first; `body` is the exact JSON it sends."""
        rows: list[dict[str, Any]] = self.call(
            """
global $wpdb;
$rows = $wpdb->get_results( "SELECT * FROM {$wpdb->prefix}switchboard_queue ORDER BY id", ARRAY_A );
foreach ( $rows as &$row ) {
    $numbers = array(
        'id', 'comment_id', 'attempts', 'created_at', 'next_attempt_at', 'locked_until', 'last_attempt_at'
    );
    foreach ( $numbers as $k ) {
        $row[ $k ] = (int) $row[ $k ];
    }
}
return $rows;
"""
        )
        return rows

    def clear_queue(self) -> None:
        """Forget every stored event and the last error (between tests)."""
        self.call(
            'global $wpdb; $wpdb->query( "DELETE FROM {$wpdb->prefix}switchboard_queue" ); '
            "delete_option( 'switchboard_last_error' ); return true;"
        )

    def run_cron(self, *, expire_backoff: bool = False) -> None:
        """Run the due WP-Cron events the way production does: request /wp-cron.php and wait for it to finish.

        `expire_backoff=True` first makes the plugin's waiting retries (queue rows and cron events) due now, as
        though their backoff had passed.
        """
        if expire_backoff:
            self.call(_EXPIRE_BACKOFF)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            response = client.get("/wp-cron.php")
        if response.status_code != 200:
            raise RuntimeError(f"wp-cron.php answered {response.status_code}: {response.text[:2000]}")

    def scheduled(self) -> dict[str, list[int]]:
        """The plugin's WP-Cron events: hook -> timestamps."""
        found: dict[str, list[int]] = self.call(
            """
$found = array( 'switchboard_drain_queue' => array(), 'switchboard_retry_queue' => array() );
foreach ( _get_cron_array() as $timestamp => $hooks ) {
    foreach ( array_keys( $found ) as $hook ) {
        if ( isset( $hooks[ $hook ] ) ) { $found[ $hook ][] = (int) $timestamp; }
    }
}
return $found;
"""
        )
        return found

    # ---- the admin screens -------------------------------------------------------------------------------

    @contextmanager
    def admin_session(self) -> Iterator[httpx.Client]:
        """An HTTP client logged in to wp-admin as the administrator (cookies, as a browser)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            client.get("/wp-login.php")  # sets the test cookie the login form checks
            response = client.post(
                "/wp-login.php",
                data={
                    "log": self.admin_user,
                    "pwd": self.admin_password,
                    "rememberme": "forever",
                    "redirect_to": f"{self.url}/wp-admin/",
                    "testcookie": "1",
                    "wp-submit": "Log In",
                },
            )
            if response.status_code != 302:
                raise RuntimeError(f"logging in failed: {response.status_code} {response.text[:1000]}")
            yield client

    def admin_page(self, path: str) -> str:
        """The HTML of a wp-admin page (e.g. `options-general.php?page=switchboard`) as the administrator."""
        with self.admin_session() as client:
            response = client.get(f"/wp-admin/{path}")
        if response.status_code != 200:
            raise RuntimeError(f"/wp-admin/{path}: {response.status_code} {response.text[:1000]}")
        return response.text


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its worker processes (its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the master
        os.killpg(process.pid, signal.SIGKILL)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"php -S exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/wp-login.php", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"WordPress did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def wordpress_site(workdir: Path) -> Iterator[WordPressSite]:
    """A fresh WordPress with the connector plugin active, in `workdir`; stopped and its database dropped after."""
    php = _php_binary()
    database = _Database.from_url(MARIADB_URL)
    _check_available(php, database)

    name = f"wp_test_{secrets.token_hex(6)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = workdir / "wordpress"
    debug_log = workdir / "wp-debug.log"
    server_log = workdir / "php-server.log"
    _lay_out(root)
    (root / "wp-config.php").write_text(_wp_config(database, name, url, debug_log))
    router = workdir / "router.php"
    router.write_text(_ROUTER)

    problem = _mysql_admin(php, database, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    if problem is not None:
        raise RuntimeError(f"creating the database {name} failed: {problem}")
    process: subprocess.Popen[bytes] | None = None
    try:
        admin_password = secrets.token_urlsafe(18)
        site = WordPressSite(
            url=url,
            root=root,
            database=name,
            admin_user="admin",
            admin_password=admin_password,
            debug_log=debug_log,
            server_log=server_log,
            _php=php,
            _workdir=workdir,
        )
        _, installed = site._run_php(
            _INSTALL, {"admin": "admin", "password": admin_password, "plugin": PLUGIN}, installing=True
        )
        site._user_ids["admin"] = int(installed["user_id"])
        site._app_passwords["admin"] = str(installed["application_password"])
        with server_log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603  (fixed arguments)
                [php, "-d", "opcache.enable_cli=1", "-S", f"127.0.0.1:{port}", "-t", str(root), str(router)],
                cwd=root,
                env={**os.environ, "PHP_CLI_SERVER_WORKERS": "2"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_ready(url, process, server_log)
        yield site
    finally:
        if process is not None:
            _stop_server(process)
        _mysql_admin(php, database, f"DROP DATABASE IF EXISTS `{name}`")


class AsyncWordPressSite:
    """The same site for async tests: each call runs in a worker thread."""

    def __init__(self, site: WordPressSite) -> None:
        self.sync = site

    @property
    def url(self) -> str:
        return self.sync.url

    @property
    def admin_user(self) -> str:
        return self.sync.admin_user

    @property
    def admin_password(self) -> str:
        return self.sync.admin_password

    async def php(self, code: str, **args: Any) -> str:
        return await asyncio.to_thread(self.sync.php, code, **args)

    async def call(self, code: str, **args: Any) -> Any:
        return await asyncio.to_thread(self.sync.call, code, **args)

    async def create_user(self, login: str, role: str, display_name: str, email: str | None = None) -> int:
        return await asyncio.to_thread(self.sync.create_user, login, role, display_name, email)

    async def user_id(self, login: str) -> int:
        return await asyncio.to_thread(self.sync.user_id, login)

    async def application_password(self, login: str) -> str:
        return await asyncio.to_thread(self.sync.application_password, login)

    async def create_post(
        self,
        author_login: str,
        title: str,
        categories: Sequence[str] = (),
        content: str = "A post for comments.",
        post_type: str = "post",
    ) -> int:
        return await asyncio.to_thread(self.sync.create_post, author_login, title, categories, content, post_type)

    async def rest(
        self,
        method: str,
        route: str,
        *,
        as_login: str | None = None,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        return await asyncio.to_thread(
            self.sync.rest, method, route, as_login=as_login, json_body=json_body, params=params
        )

    async def post_comment(
        self,
        post_id: int,
        content: str,
        *,
        as_login: str | None = None,
        parent: int | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> int:
        return await asyncio.to_thread(
            self.sync.post_comment,
            post_id,
            content,
            as_login=as_login,
            parent=parent,
            author_name=author_name,
            author_email=author_email,
            meta=meta,
        )

    async def comment(self, comment_id: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.comment, comment_id)

    async def comments(self, post_id: int, status: str = "all") -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.comments, post_id, status)

    async def set_status(self, comment_id: int, status: str, *, as_login: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.set_status, comment_id, status, as_login=as_login)

    async def edit_comment(self, comment_id: int, content: str, *, as_login: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.edit_comment, comment_id, content, as_login=as_login)

    async def trash(self, comment_id: int, *, as_login: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.trash, comment_id, as_login=as_login)

    async def delete(self, comment_id: int, *, as_login: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.delete, comment_id, as_login=as_login)

    async def configure_switchboard(self, url: str, secret: str, delivery_timeout: int | None = None) -> None:
        await asyncio.to_thread(self.sync.configure_switchboard, url, secret, delivery_timeout)

    async def queue(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.queue)

    async def clear_queue(self) -> None:
        await asyncio.to_thread(self.sync.clear_queue)

    async def run_cron(self, *, expire_backoff: bool = False) -> None:
        await asyncio.to_thread(self.sync.run_cron, expire_backoff=expire_backoff)

    async def admin_page(self, path: str) -> str:
        return await asyncio.to_thread(self.sync.admin_page, path)


@asynccontextmanager
async def async_wordpress_site(workdir: Path) -> AsyncIterator[AsyncWordPressSite]:
    """`wordpress_site` for async tests (setting up and tearing down also run in a thread)."""
    manager = wordpress_site(workdir)
    site = await asyncio.to_thread(manager.__enter__)
    try:
        yield AsyncWordPressSite(site)
    except BaseException as error:
        if not await asyncio.to_thread(manager.__exit__, type(error), error, error.__traceback__):
            raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)
