/*
 * token.h - bearer tokens: JSON Web Tokens (RFC 7519) signed with HS256.
 *
 * A token is base64url(header) "." base64url(payload) "." base64url(mac),
 * where the header is {"alg":"HS256","typ":"JWT","kid":"<key id>"}, the
 * payload {"sub","roles","iat","exp","jti"} and the MAC HMAC-SHA-256 of the
 * first two parts under the keyring key named by kid.
 *
 * Only HS256 is accepted, whatever a token's header asks for: the header is
 * attacker-controlled, so it may pick the key (by kid, among ours) but never
 * the algorithm.  The signature is checked before the payload is parsed.
 */
#ifndef STRATUS_SERVICES_TOKEN_H
#define STRATUS_SERVICES_TOKEN_H

#include <stdint.h>

#include "util/err.h"
#include "util/ids.h"
#include "util/keyring.h"

/* Longer tokens are refused before anything is decoded. */
#define TOKEN_MAX_LEN 4096

struct token_claims {
    char sub[ST_ID_BUF]; /* the user's id */
    unsigned roles;      /* USER_ROLE_* bits from models/user.h */
    int64_t iat;         /* issued at, seconds since the epoch */
    int64_t exp;         /* expires at, seconds since the epoch */
    char jti[ST_ID_BUF]; /* the token's own id (for revocation) */
};

/*
 * Sign @c with the current key of @ring.  @c must hold a UUID sub and jti,
 * roles within USER_ROLE_USER | USER_ROLE_ADMIN and exp > iat >= 0; anything
 * else, or a ring without a current key, is ST_ERR_INTERNAL (a bug in the
 * caller, not in the request).  On success *out is a NUL-terminated token
 * the caller frees with free().
 */
int token_issue(const struct keyring *ring, const struct token_claims *c, char **out,
                struct st_error *err);

/*
 * Check @token against @ring at @now_s (seconds since the epoch), allowing
 * @leeway_s seconds of clock skew (a negative leeway counts as 0), and
 * write its claims to *out.  A token is accepted when it has three parts,
 * its header asks for exactly HS256 and names a key of @ring, its MAC
 * matches, and its payload holds a UUID sub, integer iat and exp, a jti
 * UUID and roles (an array of known role names), with
 *
 *     exp + leeway >= now,  iat <= now + leeway,  nbf <= now + leeway,
 *
 * and iat no later than the moment its key was retired.  Every failure is
 * ST_ERR_UNAUTHENTICATED with a short message that never repeats the token.
 */
int token_verify(const struct keyring *ring, const char *token, int64_t now_s, int64_t leeway_s,
                 struct token_claims *out, struct st_error *err);

#endif
