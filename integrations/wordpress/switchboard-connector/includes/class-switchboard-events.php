<?php
/**
 * Collects comment events during a request and sends them at `shutdown`.
 *
 * Why at shutdown: the REST API saves comment meta (switchboard_reply_id) after `wp_insert_comment` has fired,
 * so each payload is built once the request is done, from the comment's state then (for a permanent delete,
 * from the data captured just before the row was removed).
 *
 * Mapping: a new comment is comment.created (whatever its status); a content edit, and a change between
 * approved and hold (including untrash and unspam) is comment.updated; trash, spam and permanent deletion are
 * comment.deleted. Only comments of type `comment` are sent (no pingbacks, trackbacks or notes).
 *
 * @package Switchboard_Connector
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Hooks into WordPress's comment actions and turns them into Switchboard events.
 */
final class Switchboard_Events {

	const META_KEY = 'switchboard_reply_id';

	/**
	 * This request's events, in order: event_id, type, comment_id, status, occurred_at.
	 *
	 * @var array<int, array<string, mixed>>
	 */
	private static array $events = array();

	/**
	 * Comment and post data captured before a permanent delete, by comment id.
	 *
	 * @var array<int, array<string, mixed>>
	 */
	private static array $snapshots = array();

	/**
	 * A comment's fields before wp_update_comment() changed them, by comment id.
	 *
	 * @var array<int, array<string, string>>
	 */
	private static array $before_update = array();

	/**
	 * Register the hooks.
	 */
	public static function init(): void {
		add_action( 'init', array( self::class, 'register_meta' ) );
		add_action( 'wp_insert_comment', array( self::class, 'on_insert' ), 10, 2 );
		add_filter( 'wp_update_comment_data', array( self::class, 'before_update' ), PHP_INT_MAX, 3 );
		add_action( 'edit_comment', array( self::class, 'on_edit' ), 10, 2 );
		add_action( 'transition_comment_status', array( self::class, 'on_transition' ), 10, 3 );
		add_action( 'trashed_comment', array( self::class, 'on_trashed_or_spammed' ), 10, 2 );
		add_action( 'spammed_comment', array( self::class, 'on_trashed_or_spammed' ), 10, 2 );
		add_action( 'delete_comment', array( self::class, 'on_delete' ), 10, 2 );
		add_action( 'shutdown', array( self::class, 'flush' ), 1000 );
	}

	/**
	 * The comment meta Switchboard sets on the replies it posts (POST /wp-json/wp/v2/comments with
	 * "meta": {"switchboard_reply_id": "<uuid>"}); only users who can moderate comments may write it.
	 */
	public static function register_meta(): void {
		register_meta(
			'comment',
			self::META_KEY,
			array(
				'type'              => 'string',
				'description'       => __( 'Set by Switchboard on the replies it posts.', 'switchboard-connector' ),
				'single'            => true,
				'show_in_rest'      => true,
				'sanitize_callback' => 'sanitize_text_field',
				'auth_callback'     => static function ( $allowed, $meta_key, $object_id, $user_id ) {
					return user_can( $user_id, 'moderate_comments' );
				},
			)
		);
	}

	// ---- hooks -------------------------------------------------------------------------------------------

	/**
	 * A new comment.
	 *
	 * @param int        $id      Comment id.
	 * @param WP_Comment $comment The comment.
	 */
	public static function on_insert( $id, $comment ): void {
		if ( self::relevant( $comment ) ) {
			self::record( 'comment.created', (int) $id, self::status( $comment->comment_approved ) );
		}
	}

	/**
	 * Keep the fields a comment had before wp_update_comment() writes the new ones.
	 *
	 * @param array|WP_Error $data       The new data.
	 * @param array          $comment    The old data.
	 * @param array          $commentarr The request.
	 * @return array|WP_Error The new data, unchanged.
	 */
	public static function before_update( $data, $comment, $commentarr ) {
		if ( is_array( $data ) && isset( $commentarr['comment_ID'] ) ) {
			$old = get_comment( (int) $commentarr['comment_ID'] );
			if ( $old instanceof WP_Comment ) {
				self::$before_update[ (int) $old->comment_ID ] = self::editable_fields( $old );
			}
		}
		return $data;
	}

	/**
	 * An edit: sent when the content (or author, parent, post) changed; a status change arrives through
	 * transition_comment_status.
	 *
	 * @param int   $id   Comment id.
	 * @param array $data The saved data.
	 */
	public static function on_edit( $id, $data ): void {
		$id      = (int) $id;
		$comment = get_comment( $id );
		if ( ! $comment instanceof WP_Comment || ! self::relevant( $comment ) ) {
			return;
		}
		$before = self::$before_update[ $id ] ?? null;
		unset( self::$before_update[ $id ] );
		if ( null !== $before && $before === self::editable_fields( $comment ) ) {
			return;  // Saved without a change to what Switchboard reads.
		}
		$status = self::status( $comment->comment_approved );
		if ( 'trash' === $status || 'spam' === $status ) {
			return;  // An edit of a deleted comment: Switchboard has erased it already.
		}
		self::record( 'comment.updated', $id, $status );
	}

	/**
	 * A status change: approved <-> hold, untrash and unspam are updates; trash and spam are deletions.
	 * (A permanent delete arrives as 'delete' here and is handled by on_delete.)
	 *
	 * @param string     $new_status New status (approved, unapproved, spam, trash, delete).
	 * @param string     $old_status Old status.
	 * @param WP_Comment $comment    The comment.
	 */
	public static function on_transition( $new_status, $old_status, $comment ): void {
		if ( ! $comment instanceof WP_Comment || ! self::relevant( $comment ) ) {
			return;
		}
		$status = self::status( $new_status );
		if ( null === $status ) {
			return;
		}
		$type = ( 'trash' === $status || 'spam' === $status ) ? 'comment.deleted' : 'comment.updated';
		self::record( $type, (int) $comment->comment_ID, $status );
	}

	/**
	 * `trashed_comment` / `spammed_comment`: fire after the transition above, which already recorded the
	 * deletion; recorded here only when some other code path moved the comment without a transition.
	 *
	 * @param int        $id      Comment id.
	 * @param WP_Comment $comment The comment as it was before.
	 */
	public static function on_trashed_or_spammed( $id, $comment ): void {
		$current = get_comment( (int) $id );
		if ( ! $current instanceof WP_Comment || ! self::relevant( $current ) ) {
			return;
		}
		self::record( 'comment.deleted', (int) $id, self::status( $current->comment_approved ) );
	}

	/**
	 * A permanent delete, just before the row goes: capture everything the payload needs now.
	 *
	 * @param int        $id      Comment id.
	 * @param WP_Comment $comment The comment.
	 */
	public static function on_delete( $id, $comment ): void {
		if ( ! $comment instanceof WP_Comment ) {
			$comment = get_comment( (int) $id );
		}
		if ( ! $comment instanceof WP_Comment || ! self::relevant( $comment ) ) {
			return;
		}
		$status = self::status( $comment->comment_approved );
		self::$snapshots[ (int) $comment->comment_ID ] = array(
			'comment' => self::comment_part( $comment, $status ),
			'post'    => self::post_part( (int) $comment->comment_post_ID ),
		);
		self::record( 'comment.deleted', (int) $comment->comment_ID, $status );
	}

	// ---- collecting and sending --------------------------------------------------------------------------

	/**
	 * Add an event, unless it repeats the previous one of this comment in this request (one change can fire
	 * several hooks: an edit that also approves, trash then `trashed_comment`); the kept event takes the newer
	 * status.
	 *
	 * @param string $type       The event type.
	 * @param int    $comment_id The comment.
	 * @param string $status     Its status after this change.
	 */
	private static function record( string $type, int $comment_id, ?string $status ): void {
		for ( $i = count( self::$events ) - 1; $i >= 0; $i-- ) {
			if ( self::$events[ $i ]['comment_id'] !== $comment_id ) {
				continue;
			}
			$previous = self::$events[ $i ]['type'];
			$same     = $previous === $type
				|| ( 'comment.updated' === $type && 'comment.created' === $previous );
			if ( $same ) {
				self::$events[ $i ]['status'] = $status ?? self::$events[ $i ]['status'];
				return;
			}
			break;
		}
		self::$events[] = array(
			'event_id'    => 'wpc_' . bin2hex( random_bytes( 16 ) ),
			'type'        => $type,
			'comment_id'  => $comment_id,
			'status'      => $status,
			'occurred_at' => gmdate( 'Y-m-d\TH:i:s\Z' ),
		);
	}

	/**
	 * At shutdown: build each payload, store it, send it.
	 */
	public static function flush(): void {
		if ( ! self::$events ) {
			return;
		}
		$events       = self::$events;
		self::$events = array();
		if ( ! Switchboard_Queue::configured() ) {
			Switchboard_Queue::note_error(
				/* translators: %d: number of events */
				sprintf( __( 'Switchboard is not configured (webhook URL and whsec_ secret): %d comment event(s) were not sent.', 'switchboard-connector' ), count( $events ) )
			);
			return;
		}
		$ids = array();
		foreach ( $events as $event ) {
			$body = self::body( $event );
			if ( null === $body ) {
				continue;
			}
			$ids[] = Switchboard_Queue::enqueue( $event['event_id'], $event['comment_id'], $event['type'], $body );
		}
		// Under PHP-FPM the visitor's page is complete now; the deliveries below need not hold it up.
		if ( function_exists( 'fastcgi_finish_request' ) ) {
			fastcgi_finish_request();
		}
		Switchboard_Queue::deliver_new( $ids );
	}

	/**
	 * The JSON body of one event, or null when the comment is gone without a snapshot.
	 *
	 * @param array $event A recorded event.
	 */
	private static function body( array $event ): ?string {
		$comment_id = $event['comment_id'];
		$comment    = get_comment( $comment_id );
		if ( $comment instanceof WP_Comment ) {
			$status = $event['status'] ?? self::status( $comment->comment_approved ) ?? 'hold';
			$parts  = array(
				'comment' => self::comment_part( $comment, $status ),
				'post'    => self::post_part( (int) $comment->comment_post_ID ),
			);
		} elseif ( isset( self::$snapshots[ $comment_id ] ) ) {
			$parts = self::$snapshots[ $comment_id ];
		} else {
			return null;
		}
		$payload = array(
			'type'        => $event['type'],
			'event_id'    => $event['event_id'],
			'occurred_at' => $event['occurred_at'],
			'site'        => array(
				'url'  => home_url(),
				'name' => self::text( (string) get_option( 'blogname' ) ),
			),
			'comment'     => $parts['comment'],
			'post'        => $parts['post'],
		);
		$json = wp_json_encode( $payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
		if ( false === $json ) {
			Switchboard_Queue::note_error( __( 'An event could not be encoded as JSON and was not sent.', 'switchboard-connector' ), $event['event_id'] );
			return null;
		}
		return $json;
	}

	/**
	 * The "comment" object of a payload.
	 *
	 * @param WP_Comment $comment The comment.
	 * @param string     $status  approved, hold, spam or trash.
	 */
	private static function comment_part( WP_Comment $comment, ?string $status ): array {
		$reply_id = get_comment_meta( (int) $comment->comment_ID, self::META_KEY, true );
		$user_id  = (int) $comment->user_id;
		$parent   = (int) $comment->comment_parent;
		return array(
			'id'                   => (string) $comment->comment_ID,
			'post_id'              => (string) $comment->comment_post_ID,
			'parent_id'            => $parent > 0 ? (string) $parent : null,
			'status'               => $status ?? 'hold',
			'content'              => (string) $comment->comment_content,
			'date_gmt'             => self::rfc3339( (string) $comment->comment_date_gmt, (string) $comment->comment_date ),
			'link'                 => (string) get_comment_link( $comment ),
			'author'               => array(
				'user_id' => $user_id > 0 ? (string) $user_id : null,
				'name'    => self::text( (string) $comment->comment_author ),
				'email'   => (string) $comment->comment_author_email,
			),
			'switchboard_reply_id' => ( is_string( $reply_id ) && '' !== $reply_id ) ? $reply_id : null,
		);
	}

	/**
	 * The "post" object of a payload.
	 *
	 * @param int $post_id The post.
	 */
	private static function post_part( int $post_id ): array {
		$post = get_post( $post_id );
		if ( ! $post instanceof WP_Post ) {
			return array(
				'id'         => (string) $post_id,
				'title'      => '',
				'link'       => '',
				'type'       => '',
				'categories' => array(),
				'author'     => array(
					'user_id' => null,
					'name'    => '',
					'email'   => '',
				),
			);
		}
		$terms      = get_the_terms( $post, 'category' );
		$categories = array();
		if ( is_array( $terms ) ) {
			foreach ( $terms as $term ) {
				$categories[] = self::text( (string) $term->name );
			}
		}
		$author_id = (int) $post->post_author;
		$author    = $author_id > 0 ? get_userdata( $author_id ) : false;
		return array(
			'id'         => (string) $post->ID,
			'title'      => self::text( wp_strip_all_tags( (string) $post->post_title ) ),
			'link'       => (string) get_permalink( $post ),
			'type'       => (string) $post->post_type,
			'categories' => $categories,
			'author'     => array(
				'user_id' => $author_id > 0 ? (string) $author_id : null,
				'name'    => $author ? self::text( (string) $author->display_name ) : '',
				'email'   => $author ? (string) $author->user_email : '',
			),
		);
	}

	// ---- small helpers -----------------------------------------------------------------------------------

	/**
	 * Only real comments (type `comment`, or '' on old rows): no pingbacks, trackbacks or notes.
	 *
	 * @param WP_Comment|object $comment The comment.
	 */
	private static function relevant( $comment ): bool {
		return is_object( $comment ) && in_array( (string) $comment->comment_type, array( 'comment', '' ), true );
	}

	/**
	 * Switchboard's status for a `comment_approved` value or a transition status; null for 'delete'.
	 *
	 * @param string|int $value 1/approve/approved, 0/hold/unapproved, spam, trash, post-trashed.
	 */
	private static function status( $value ): ?string {
		switch ( (string) $value ) {
			case '1':
			case 'approve':
			case 'approved':
				return 'approved';
			case '0':
			case 'hold':
			case 'unapproved':
				return 'hold';
			case 'spam':
				return 'spam';
			case 'trash':
			case 'post-trashed':
				return 'trash';
			default:
				return null;
		}
	}

	/**
	 * Plain text from a field WordPress stores HTML-escaped (titles, names, terms): "Q&amp;A" -> "Q&A".
	 *
	 * @param string $value The stored value.
	 */
	private static function text( string $value ): string {
		return html_entity_decode( $value, ENT_QUOTES | ENT_HTML5, 'UTF-8' );
	}

	/**
	 * The fields whose change makes an edit worth sending.
	 *
	 * @param WP_Comment $comment The comment.
	 */
	private static function editable_fields( WP_Comment $comment ): array {
		return array(
			'content' => (string) $comment->comment_content,
			'author'  => (string) $comment->comment_author,
			'email'   => (string) $comment->comment_author_email,
			'user'    => (string) $comment->user_id,
			'parent'  => (string) $comment->comment_parent,
			'post'    => (string) $comment->comment_post_ID,
		);
	}

	/**
	 * "2026-12-01 21:00:00" (UTC) as "2026-12-01T21:00:00Z"; falls back to the local date when the GMT one
	 * is empty.
	 *
	 * @param string $gmt   The GMT date.
	 * @param string $local The local date.
	 */
	private static function rfc3339( string $gmt, string $local ): string {
		if ( '' === $gmt || str_starts_with( $gmt, '0000-00-00' ) ) {
			$gmt = get_gmt_from_date( $local );
		}
		$date = date_create_immutable_from_format( 'Y-m-d H:i:s', $gmt, new DateTimeZone( 'UTC' ) );
		return $date ? $date->format( 'Y-m-d\TH:i:s\Z' ) : gmdate( 'Y-m-d\TH:i:s\Z' );
	}
}
