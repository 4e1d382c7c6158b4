//! `[auth.basic]`, `[auth.jwt]`, `[auth.tokens]` and `[rate_control]`: edge
//! authentication's validators and key sources (a users file must parse), token lifetimes
//! and the per-user authorization rate.

use std::time::Duration;

use super::super::file::{AuthFile, RateControlFile, TokensFile};
use super::super::users::load_users_file;
use super::super::{
    AuthSettings, BasicSettings, DEFAULT_CREDENTIAL_TTL, DEFAULT_USERS_REFRESH, JwtSettings, RateControlSettings, TokenSettings,
};
use super::Checker;

pub(super) fn check_auth(c: &mut Checker<'_>, auth: &AuthFile, rate: Option<RateControlFile>) -> AuthSettings {
    let mut settings = AuthSettings::default();
    if let Some(rate) = rate {
        settings.rate_control = Some(RateControlSettings {
            max_authorizations: c.bounded("rate_control.max_authorizations", rate.max_authorizations, 3, 1, 100_000) as u32,
            period: c.duration("rate_control.period", rate.period.as_ref(), Duration::from_secs(300)),
        });
    }
    if let Some(basic) = &auth.basic {
        if basic.validate_url.is_none() && basic.users_file.is_none() {
            c.err("auth.basic", "no validator", "set validate_url (checked upstream) or users_file (argon2 hashes)");
        }
        if let Some(url) = &basic.validate_url {
            c.url("auth.basic.validate_url", url);
        }
        if let Some(url) = &basic.users_url {
            c.url("auth.basic.users_url", url);
        }
        if basic.validate_url.is_some() && basic.users_file.is_some() {
            c.err("auth.basic.users_file", "both validate_url and users_file are set", "keep one validator");
        }
        let users_file = basic.users_file.as_ref().map(|file| {
            let path = c.existing_file("auth.basic.users_file", file, "users file");
            if path.is_file()
                && let Err(why) = load_users_file(&path)
            {
                c.err("auth.basic.users_file", why.to_string(), "write [users] with name = \"$argon2id$...\" entries");
            }
            path
        });
        let realm = basic.realm.clone().unwrap_or_else(|| "portcullis".to_string());
        if realm.contains('"') || realm.chars().any(char::is_control) {
            c.err("auth.basic.realm", format!("{realm:?} contains a quote or control character"), "use plain text such as \"Finesse\"");
        }
        settings.basic = Some(BasicSettings {
            validate_url: basic.validate_url.clone(),
            credential_ttl: c.duration("auth.basic.credential_ttl", basic.credential_ttl.as_ref(), DEFAULT_CREDENTIAL_TTL),
            users_url: basic.users_url.clone(),
            users_refresh: c.duration("auth.basic.users_refresh", basic.users_refresh.as_ref(), DEFAULT_USERS_REFRESH),
            users_file,
            realm,
        });
    }
    if let Some(jwt) = &auth.jwt {
        match (&jwt.secret, &jwt.jwks_url) {
            (None, None) => c.err("auth.jwt", "no key source", "set secret (HS256) or jwks_url (RS256/ES256/EdDSA)"),
            (Some(secret), _) if secret.len() < 32 => {
                c.err("auth.jwt.secret", "shorter than 32 bytes", "use a random secret of at least 32 bytes")
            }
            _ => {}
        }
        if let Some(url) = &jwt.jwks_url {
            c.url("auth.jwt.jwks_url", url);
        }
        settings.jwt = Some(JwtSettings {
            secret: jwt.secret.clone(),
            jwks_url: jwt.jwks_url.clone(),
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            leeway: match &jwt.leeway {
                Some(text) if humantime::parse_duration(text.trim()).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
                other => c.duration("auth.jwt.leeway", other.as_ref(), Duration::from_secs(30)),
            },
            jwks_refresh: c.duration("auth.jwt.jwks_refresh", jwt.jwks_refresh.as_ref(), Duration::from_secs(900)),
        });
    }
    let default_tokens = TokensFile::default();
    let tokens = auth.tokens.as_ref().unwrap_or(&default_tokens);
    let token_settings = TokenSettings {
        refresh_interval: c.duration("auth.tokens.refresh_interval", tokens.refresh_interval.as_ref(), Duration::from_secs(480 * 60)),
        cleanup_interval: c.duration("auth.tokens.cleanup_interval", tokens.cleanup_interval.as_ref(), Duration::from_secs(720 * 60)),
    };
    if settings.basic.is_some() || settings.jwt.is_some() {
        settings.tokens = Some(token_settings);
    }
    settings
}
